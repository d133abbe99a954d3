"""The fast CPU path computes the eager model's function: probabilities and classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crystal_pipeline.model.fast_cpu import FastCrystalNet, WinogradConvPool, winograd_matrices
from crystal_pipeline.model import CrystalNet, predict_proba


def _peaked_model(resolution: int, seed: int = 0) -> CrystalNet:
    """A random CrystalNet whose softmax is far from uniform, so a wrong layer shows.

    The freshly initialized output layer (N(0, 0.01)) gives near-uniform
    probabilities that any implementation would match; scaling it up makes the
    probabilities depend sharply on every earlier layer.
    """
    torch.manual_seed(seed)
    model = CrystalNet(resolution=resolution).eval()
    rng = np.random.default_rng(seed)
    shape = (resolution, resolution)
    model.set_normalization(rng.uniform(60, 180, shape), rng.uniform(20, 60, shape))
    with torch.no_grad():
        model.out.weight.mul_(300.0)
        for conv in (model.conv1, model.conv2, model.conv3, model.conv4):
            conv.bias.normal_(0.0, 0.1)
    return model


def test_winograd_matrices_reproduce_1d_correlation():
    at, g, bt = winograd_matrices(4, 5)
    rng = np.random.default_rng(1)
    for _ in range(5):
        kernel, signal = rng.normal(size=5), rng.normal(size=8)
        out = at @ ((g @ kernel) * (bt @ signal))
        np.testing.assert_allclose(out, np.correlate(signal, kernel, "valid"), atol=1e-12)


@pytest.mark.parametrize("side", [28, 14, 7])  # 7: tiles overhang the image, odd pooled size
def test_winograd_layer_matches_conv_relu_pool(side):
    torch.manual_seed(side)
    conv = torch.nn.Conv2d(16, 24, 5, padding=2).eval()
    x = torch.randn(5, 16, side, side)
    with torch.inference_mode():
        expected = F.max_pool2d(F.relu(conv(x)), 2)
        got = WinogradConvPool.from_conv(conv, chunk=2)(x.permute(0, 2, 3, 1).contiguous())
    assert got.shape == (5, side // 2, side // 2, 24)
    torch.testing.assert_close(got.permute(0, 3, 1, 2), expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("resolution", [128, 64])
@pytest.mark.parametrize("algorithm", ["winograd", "direct"])
def test_fast_model_equals_eager(resolution, algorithm):
    model = _peaked_model(resolution)
    images = torch.randint(0, 256, (20, resolution, resolution), dtype=torch.uint8)
    expected = predict_proba(model, images)
    # Sub-batches of 8 over 2 threads with a ragged last one: the threaded path is tested too.
    fast = FastCrystalNet.from_model(model, algorithms={"conv2": algorithm, "conv3": algorithm},
                                     threads=2, sub_batch=8)
    got = fast.predict_proba(images)
    fast.close()
    assert got.shape == expected.shape == (20, 10) and got.dtype == np.float32
    assert expected.max(axis=1).mean() > 0.5, "test model is not peaked enough to be telling"
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def test_fast_model_restores_thread_count_and_leaves_the_model_alone():
    model = _peaked_model(64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    fast = FastCrystalNet.from_model(model, threads=2, sub_batch=4)
    fast.logits(torch.randint(0, 256, (9, 64, 64), dtype=torch.uint8))
    fast.close()
    assert torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fast_model_rejects_wrong_image_size():
    fast = FastCrystalNet.from_model(CrystalNet(resolution=64), threads=1)
    with pytest.raises(ValueError, match="expects"):
        fast.logits(torch.zeros(2, 128, 128, dtype=torch.uint8))
