"""Class-activation maps of CrystalNet's crystal classes, traced back to the picture as taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crystal_pipeline.ingest import imaging
from crystal_pipeline.model import cam
from crystal_pipeline.model.network import CrystalNet
from crystal_pipeline.synthetic import render
from crystal_pipeline.synthetic.imager import IMAGER_HWI


def _one_crystal_picture(tmp_path):
    """An HWI picture (4:3, 171 x 128) of class crystal holding exactly one drawn crystal,
    written and decoded the way ingest does: the network's input and the crystal's box."""
    for seed in range(200):
        image, truth = render.render_well(np.random.default_rng([7, seed]), 3, 128, 0.2, IMAGER_HWI)
        crystals = [s for s in truth.geometry if s.kind == "crystal"]
        if len(crystals) == 1 and 0.05 < crystals[0].x1 - crystals[0].x0 < 0.12:
            box = crystals[0]
            cx = (box.x0 + box.x1) / 2 * image.shape[1]
            if abs(cx - image.shape[1] / 2) < 0.35 * image.shape[0]:  # inside the central square
                path = tmp_path / "well.png"
                Image.fromarray(image).save(path)
                return imaging.load_grey(path, 128), image.shape, box
    raise AssertionError("no one-crystal picture in 200 seeds")


def _net_reading_one_cell(resolution: int, row: int, col: int) -> CrystalNet:
    """CrystalNet (random convolutions) whose crystal logit is the sum of conv4's activations
    at one cell: that cell, and only it, drives the score."""
    torch.manual_seed(0)
    net = CrystalNet(resolution=resolution, augment_params=None).eval()
    side = int(round((net.fc1.in_features // 128) ** 0.5))
    mask = torch.zeros(128, side, side)
    mask[:, row, col] = 1.0
    with torch.no_grad():
        for layer in (net.fc1, net.fc2, net.out):
            layer.weight.zero_()
            layer.bias.zero_()
        net.fc1.weight[0] = mask.flatten()
        net.fc2.weight[0, 0] = 1.0
        net.out.weight[2, 0] = 1.0  # class 3, crystal
    return net


def test_map_peaks_on_the_one_drawn_crystal_in_picture_fractions(tmp_path):
    pixels, (height, width), box = _one_crystal_picture(tmp_path)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    # the conv4 cell over the crystal: picture fraction -> input square -> cell
    side, left = height, (width - height) // 2
    u, v = (cx * width - left) * 128 / side, cy * height * 128 / side
    probe = CrystalNet(resolution=128, augment_params=None)
    centres = cam.cell_centres(probe, "conv4", 6)
    col, row = int(np.argmin(np.abs(centres - u))), int(np.argmin(np.abs(centres - v)))
    net = _net_reading_one_cell(128, row, col)

    maps = cam.grad_cam(net, pixels[None], layer="conv4", method="hirescam")
    assert maps.shape == (1, 6, 6)
    assert maps[0, row, col] > 0
    assert np.count_nonzero(maps[0]) == 1  # no cell that does not drive the score lights up

    (position,) = cam.crystal_positions(net, pixels[None], [(width, height)], layer="conv4", method="hirescam")
    half_cell_x, half_cell_y = 8 * side / 128 / width, 8 * side / 128 / height
    # x is a fraction of the 4:3 frame's full width (a square's fraction would miss by 12%)
    assert box.x0 - half_cell_x <= position.x <= box.x1 + half_cell_x
    assert box.y0 - half_cell_y <= position.y <= box.y1 + half_cell_y
    assert position.heat_array().max() == pytest.approx(1.0)
    assert len(position.xs) == 6 and 0 < position.xs[0] < position.xs[-1] < 1

    # the finer map of the block before it peaks inside the driving cell's reach too
    (fine,) = cam.crystal_positions(net, pixels[None], [(width, height)], layer="conv3", method="hirescam")
    assert abs(fine.x - position.x) * width < 16 * side / 128 and abs(fine.y - position.y) * height < 16 * side / 128


def test_both_methods_give_maps_that_batching_does_not_change():
    net = _net_reading_one_cell(64, 1, 1)
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    for method in cam.METHODS:
        maps = cam.grad_cam(net, pixels, layer="conv4", method=method)
        assert maps.shape == (3, 3, 3) and (maps >= 0).all()
    # batched equals one by one (eval mode: images do not touch each other's gradients)
    one = np.concatenate([cam.grad_cam(net, pixels[i:i + 1], layer="conv3") for i in range(3)])
    np.testing.assert_allclose(cam.grad_cam(net, pixels, layer="conv3"), one, rtol=1e-4, atol=1e-6)


def test_square_to_picture_follows_ingest_central_square():
    x, y = cam.square_to_picture(np.array([0.0, 64.0]), np.array([0.0, 64.0]), 64, 696, 520)
    left = (696 - 520) // 2
    assert x[0] == pytest.approx(left / 696) and x[1] == pytest.approx((left + 520) / 696)
    assert y[0] == 0.0 and y[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cam.grad_cam(_net_reading_one_cell(64, 0, 0), np.zeros((1, 64, 64), np.uint8), layer="fc1")


def test_bf16_map_is_computed_in_bf16_and_peaks_where_fp32_does(tmp_path):
    """Plates labelled in bf16 get their crystal positions in bf16 too (plates.labelling): the
    convolutions must really run in bf16 (else nothing is saved), and the peak must stay put."""
    pixels, (height, width), _ = _one_crystal_picture(tmp_path)
    net = _net_reading_one_cell(128, 2, 3)
    seen = []
    handle = net.conv4.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        fp32 = cam.grad_cam(net, pixels[None], layer="conv4", method="hirescam")
        bf16 = cam.grad_cam(net, pixels[None], layer="conv4", method="hirescam", precision="bf16")
    finally:
        handle.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert np.unravel_index(np.argmax(bf16[0]), bf16[0].shape) == (2, 3) == np.unravel_index(np.argmax(fp32[0]),
                                                                                             fp32[0].shape)
    np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=1e-3 * float(fp32.max()))
    (a,), (b,) = (cam.crystal_positions(net, pixels[None], [(width, height)], layer="conv4", method="hirescam",
                                        precision=p) for p in ("fp32", "bf16"))
    assert abs(a.x - b.x) * width < 1 and abs(a.y - b.y) * height < 1  # within a pixel of the picture
    with pytest.raises(ValueError):
        cam.grad_cam(net, pixels[None], precision="fp16")
