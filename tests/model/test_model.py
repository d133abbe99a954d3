"""CrystalNet against Table 1, and the geometry of its normalization and augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crystal_pipeline.evaluation.metrics import crystal_probability
from crystal_pipeline.model import augment
from crystal_pipeline.model import (
    ArtifactError,
    CrystalNet,
    contrast_normalize,
    feature_size,
    load,
    predict_proba,
    weight_counts,
)

# Table 1's "# Weights" column at 128 px (biases aside), in layer order.
TABLE_1_WEIGHTS = {
    "conv1": 1_600,
    "conv2": 102_400,
    "conv3": 204_800,
    "conv4": 147_456,
    "fc1": 9_437_184,
    "fc2": 4_194_304,
    "out": 20_480,
}


def test_weight_counts_match_table_1():
    assert weight_counts(CrystalNet(num_classes=10, resolution=128)) == TABLE_1_WEIGHTS


def test_spatial_sizes_match_table_1():
    model = CrystalNet(resolution=128).eval()
    sizes = []
    model.conv1.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model.conv2.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model.conv3.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model.conv4.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model(torch.zeros(1, 128, 128, dtype=torch.uint8))
    assert sizes == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (128, 6, 6)]


@pytest.mark.parametrize("resolution,side", [(32, 1), (64, 3), (128, 6), (256, 13)])
def test_output_shapes_at_each_resolution(resolution, side):
    assert feature_size(resolution) == side
    model = CrystalNet(resolution=resolution)
    assert model.fc1.in_features == 128 * side * side
    images = torch.randint(0, 256, (2, resolution, resolution), dtype=torch.uint8)
    assert model.train()(images).shape == (2, 10)
    assert model.eval()(images.unsqueeze(1)).shape == (2, 10)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expects"):
        CrystalNet(resolution=64)(torch.zeros(1, 32, 32))


def _box_mean(x, k=7):
    return torch.nn.functional.avg_pool2d(x, k, stride=1)


def test_contrast_normalization_is_locally_zero_mean_and_unit_scale():
    gen = torch.Generator().manual_seed(0)
    # smooth illumination gradient plus strong texture: CN should remove the first
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    x = (3.0 * xx / 64 + torch.randn(1, 1, 64, 64, generator=gen) * 2.0).float()
    y = contrast_normalize(x)
    interior = y[..., 3:-3, 3:-3]
    local_mean = _box_mean(interior)
    local_std = (_box_mean(interior**2) - local_mean**2).sqrt()
    assert local_mean.abs().mean() < 0.1
    assert 0.85 < local_std.mean() < 1.1


def test_contrast_normalization_ignores_brightness_and_contrast():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 32, 32, generator=gen) * 3.0
    torch.testing.assert_close(contrast_normalize(2.0 * x + 5.0), contrast_normalize(x), atol=0.02, rtol=0.02)


def _dot_image(size, row, col):
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row, col] = 1.0
    return image


def _centroid(image):
    image = image[0, 0]
    rows, cols = torch.meshgrid(
        torch.arange(image.shape[0], dtype=torch.float32),
        torch.arange(image.shape[1], dtype=torch.float32),
        indexing="ij",
    )
    total = image.sum()
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _theta(mirror=False, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0), size=128):
    return augment.similarity_theta(
        torch.tensor([mirror]),
        torch.tensor([math.radians(angle_deg)]),
        torch.tensor([scale]),
        torch.tensor([list(shift)]),
        size,
        augment.crop_size(size),
    )


def test_identity_transform_is_the_central_crop():
    image = torch.rand(1, 1, 128, 128)
    warped = augment.warp(image, _theta(), 112)
    torch.testing.assert_close(warped, augment.center_crop(image, 112), atol=1e-5, rtol=0)


def test_mirroring_sends_a_left_dot_to_the_right():
    # input column 20 -> crop column 12 -> mirrored in the 112-px crop: 111 - 12 = 99
    warped = augment.warp(_dot_image(128, 40, 20), _theta(mirror=True), 112)
    row, col = _centroid(warped)
    assert (round(row, 3), round(col, 3)) == (32.0, 99.0)
    assert warped.max() == pytest.approx(1.0, abs=1e-5)


def test_shift_moves_content_by_the_expected_pixels():
    before = _centroid(augment.center_crop(_dot_image(128, 60, 50), 112))
    after = _centroid(augment.warp(_dot_image(128, 60, 50), _theta(shift=(3.0, -2.0)), 112))
    assert after[0] == pytest.approx(before[0] - 2.0, abs=1e-3)  # up by 2
    assert after[1] == pytest.approx(before[1] + 3.0, abs=1e-3)  # right by 3


def test_scale_above_one_zooms_out_and_rotation_keeps_distance():
    # a soft blob (so bilinear sampling at a new pitch keeps its centroid) whose
    # centre is 24 px right of the image centre, in centred pixel coordinates
    rows, cols = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    src = torch.exp(-((rows - 63.5) ** 2 + (cols - 87.5) ** 2) / (2 * 2.0**2))[None, None]
    row, col = _centroid(augment.warp(src, _theta(scale=1.2), 112))
    assert col - 55.5 == pytest.approx(24.0 / 1.2, abs=0.05)  # appears smaller: closer to the centre
    assert row == pytest.approx(55.5, abs=0.05)
    row, col = _centroid(augment.warp(src, _theta(angle_deg=90.0), 112))
    assert math.hypot(row - 55.5, col - 55.5) == pytest.approx(24.0, abs=0.05)
    assert abs(col - 55.5) < 0.05  # a quarter turn puts it on the vertical axis


def test_random_transforms_stay_in_the_papers_ranges():
    params = augment.AugmentParams()
    theta = augment.random_theta(4000, 128, params, generator=torch.Generator().manual_seed(0))
    linear = theta[:, :, :2] * (128 / 112)
    scale = torch.sqrt(torch.abs(torch.linalg.det(linear)))
    assert 0.8 - 1e-4 <= scale.min() and scale.max() <= 1.2 + 1e-4
    mirrored = torch.linalg.det(linear) < 0
    assert 0.45 < mirrored.float().mean() < 0.55
    # the shift in input pixels: t = -(2/W) A d  =>  d = -(W/2) A^-1 t
    shift = -(128 / 2) * torch.linalg.solve(linear, theta[:, :, 2:]).squeeze(-1)
    assert shift.abs().max() <= 8.0 + 1e-3
    assert shift.abs().max() > 7.5


def test_eval_is_deterministic_and_training_augments():
    torch.manual_seed(0)
    model = CrystalNet(resolution=32)
    images = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8)
    model.eval()
    torch.testing.assert_close(model(images), model(images), rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(images), model(images))


def test_predict_proba_is_a_softmax_over_classes():
    model = CrystalNet(resolution=32)
    probs = predict_proba(model, np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8))
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(crystal_probability(probs), probs[:, 2] + probs[:, 4] + probs[:, 6], atol=1e-6)
    assert model.training  # restored


def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    model = CrystalNet(resolution=32, augment_params=None)
    images = torch.randint(0, 256, (16, 32, 32), dtype=torch.uint8)
    labels = torch.arange(16) % 10
    # Adam: this checks capacity and gradient flow through all 13 layers, not SGD's
    # tuning (memorizing pure noise takes SGD a few hundred steps).
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(images).argmax(1) == labels).float().mean() == 1.0


def test_load_names_the_missing_or_bad_file(tmp_path):
    missing = tmp_path / "nope" / "model.pt"
    with pytest.raises(ArtifactError, match="nope/model.pt"):
        load(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="garbage.pt"):
        load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ArtifactError, match="not a CrystalNet artifact"):
        load(foreign)


def test_set_normalization_checks_shape_and_floors_std():
    model = CrystalNet(resolution=32)
    with pytest.raises(ValueError, match="32, 32"):
        model.set_normalization(np.zeros((16, 16)), np.ones((16, 16)))
    model.set_normalization(np.full((32, 32), 10.0), np.zeros((32, 32)))
    assert float(model.pixel_std.min()) == 1.0


def test_calibration_travels_in_the_artifact_and_old_artifacts_get_the_defaults(tmp_path):
    import numpy as np

    from crystal_pipeline.model import (
        DEFAULT_THRESHOLD, add_calibration, apply_temperature, calibrated, calibration_of, load, save_artifact)

    model = CrystalNet(num_classes=10, resolution=32, augment_params=None)
    path = save_artifact(tmp_path / "model.pt", model)
    old = load(path, "cpu").artifact_meta
    assert calibration_of(old) == (1.0, DEFAULT_THRESHOLD)
    assert calibration_of(old, registry_threshold=0.07) == (1.0, 0.07)
    add_calibration(path, temperature=2.5, crystal_threshold=0.2)
    assert calibration_of(load(path, "cpu").artifact_meta, registry_threshold=0.07) == (2.5, 0.2)
    add_calibration(path, temperature=2.5, crystal_threshold=None)  # no crystals on validation
    assert calibration_of(load(path, "cpu").artifact_meta) == (2.5, DEFAULT_THRESHOLD)
    with pytest.raises(ValueError):
        add_calibration(path, temperature=0.0, crystal_threshold=0.2)
    probs = np.array([[0.7, 0.2, 0.1] + [0.0] * 7], dtype=np.float32)
    softened = calibrated(lambda pixels: probs, 2.0)(None)
    assert softened.dtype == np.float32 and softened.argmax() == 0 and softened.max() < 0.7
    np.testing.assert_allclose(softened, apply_temperature(probs, 2.0), rtol=1e-6)
    assert calibrated(len, 1.0) is len  # T = 1: the predictor itself
