"""The fused visible + UV CrystalNet (early fusion, in_channels=2)."""

import numpy as np
import pytest
import torch

from crystal_pipeline.model.fusion import axis_rule, channel_stats, stack_pictures
from crystal_pipeline.model.network import CrystalNet, build_model


def test_a_fused_model_reads_both_channels_and_rebuilds_from_its_config():
    rng = np.random.default_rng(0)
    visible, uv = (rng.integers(0, 256, (4, 32, 32), dtype=np.uint8) for _ in range(2))
    pixels = stack_pictures(visible, uv)
    model = CrystalNet(resolution=32, in_channels=2)
    model.set_normalization(*channel_stats(pixels))
    model.eval()
    x = torch.from_numpy(pixels)
    logits = model(x)
    assert logits.shape == (4, 10)
    changed = x.clone()
    changed[:, 1] = 255 - changed[:, 1]  # the UV channel alone changes the output
    assert not torch.allclose(model(changed), logits)
    twin = build_model(model.config())
    twin.load_state_dict(model.state_dict())
    assert torch.allclose(twin.eval()(x), logits)
    with pytest.raises(ValueError, match="2, 32, 32"):
        model(x[:, 0])
    assert "in_channels" not in CrystalNet(resolution=32).config()  # visible-only configs as before


def test_axis_rule_takes_the_larger_crystal_score_and_stacks_must_match():
    assert axis_rule([0.1, 0.9], [0.5, 0.2]).tolist() == [0.5, 0.9]
    with pytest.raises(ValueError):
        stack_pictures(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))


def test_model_inputs_gives_each_model_what_it_reads_of_a_split():
    from crystal_pipeline.model.fusion import model_inputs
    from crystal_pipeline.tensors import Split

    rng = np.random.default_rng(1)
    visible, uv = (rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(2))
    with_uv = Split(["a", "b", "c"], np.array([1, 2, 3]), visible, uv=uv)
    plain = Split(["a", "b", "c"], np.array([1, 2, 3]), visible)
    fused, single = CrystalNet(resolution=32, in_channels=2), CrystalNet(resolution=32)
    np.testing.assert_array_equal(model_inputs(fused, with_uv), stack_pictures(visible, uv))
    assert model_inputs(single, with_uv) is visible  # a visible model ignores the UV column
    with pytest.raises(ValueError, match="UV"):
        model_inputs(fused, plain)
