"""One UV archive gives both kinds of model (issue 20 item 3): ``inputs`` 'auto' trains the fused
visible + UV model from tensors with UV pictures, 'visible' the visible model that labels plates
without UV (plates.model_choice), reading exactly the visible half of the same tensors."""

from __future__ import annotations

import numpy as np
import pytest

from crystal_pipeline import tensors
from crystal_pipeline.model import load
from crystal_pipeline.training import TrainConfig, train
from crystal_pipeline.training.loop import load_data

SIDE = 32


def _write(folder, with_uv: bool):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 12)):
        visible = rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
        uv = rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
        tensors.write_split(folder, split, [f"{split}{i}" for i in range(n)], [1 + i % 10 for i in range(n)], visible,
                            uv=uv if with_uv else None)
    mean, std = tensors.compute_stats(folder / "train")
    uv_stats = tensors.compute_stats(folder / "train", uv=True) if with_uv else None
    tensors.save_stats(folder / tensors.STATS_FILE, mean, std, uv_stats)
    return folder


def test_visible_inputs_train_a_one_channel_model_from_uv_tensors(tmp_path):
    uv_dir = _write(tmp_path / "uv" / "tensors" / f"r{SIDE}", with_uv=True)
    plain_dir = _write(tmp_path / "plain" / "tensors" / f"r{SIDE}", with_uv=False)

    visible = load_data(uv_dir, SIDE, with_fingerprint=True, inputs="visible")
    assert visible.in_channels == 1 and visible.train.uv is None and visible.val.uv is None
    # the same visible pixels as an archive without UV pictures: the same content, the same fingerprint
    assert visible.fingerprint == load_data(plain_dir, SIDE, with_fingerprint=True).fingerprint
    assert load_data(uv_dir, SIDE, with_fingerprint=True).in_channels == 2

    models = {}
    for inputs in ("auto", "visible"):
        config = TrainConfig.from_preset("smoke", {"updates": 2, "eval_every": 2, "checkpoint_every": 2,
                                                    "inputs": inputs, "num_threads": 1})
        out = tmp_path / f"{inputs}.pt"
        train(config, uv_dir, out, device="cpu")
        models[inputs] = load(out, "cpu")
    assert models["auto"].in_channels == 2 and models["visible"].in_channels == 1
    assert models["visible"].conv1.weight.shape[1] == 1


def test_unknown_inputs_are_refused():
    with pytest.raises(ValueError, match="inputs must be one of"):
        TrainConfig.from_preset("smoke", {"inputs": "uv"})
