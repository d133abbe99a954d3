"""Training: config, tensor reading, artifact round trip, repeatability, resume."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from crystal_pipeline.cli import train as training_cli
from crystal_pipeline.tensors import training_data as tdata
from crystal_pipeline.model import load, predict_proba
from crystal_pipeline.training import (
    TrainConfig,
    checkpoint_path_for,
    crystal_auc,
    lr_at,
    train,
)

RES = 32


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey images whose stripe frequency depends on the class: learnable, tiny."""
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(1, 11, n)
    rows, cols = np.mgrid[:RES, :RES]
    images = np.empty((n, RES, RES), np.uint8)
    for i, c in enumerate(class_ids):
        angle = rng.uniform(0, np.pi)
        wave = np.sin((0.2 + 0.1 * c) * (np.cos(angle) * cols + np.sin(angle) * rows))
        images[i] = np.clip(110 + 6 * c * wave + rng.normal(0, 6, (RES, RES)), 0, 255)
    return images, class_ids


def write_toy_tensors(data_dir, n_train=96, n_val=40, seed=0):
    tensors = data_dir / "tensors" / f"r{RES}"
    x, y = toy_images(n_train, seed)
    tdata.write_split(tensors, "train", [f"p/A{i:02d}" for i in range(n_train)], y, x, rows_per_file=50)
    tdata.write_stats(tensors, x)
    xv, yv = toy_images(n_val, seed + 1)
    tdata.write_split(tensors, "val", [f"q/B{i:02d}" for i in range(n_val)], yv, xv)
    return tensors


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_toy_tensors(root)  # 96 train images in two part files
    return root


SMOKE = TrainConfig.from_preset("smoke", {"num_threads": 2})


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """One uninterrupted smoke run, shared by the artifact and resume tests."""
    out = tmp_path_factory.mktemp("ref") / "model.pt"
    seen = []
    result = train(SMOKE, data_dir, out, trained_on="synthetic", progress=seen.append)
    return result, seen


# -- config -------------------------------------------------------------------------
def test_presets_and_overrides():
    paper = TrainConfig.from_preset("paper")
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size, paper.updates) == (
        0.01, 0.9, 1e-4, 128, 150_000
    )
    assert paper.resolution == 128 and paper.init == "kaiming"
    cfg = TrainConfig.from_preset("demo", {"lr": "0.02", "init": "paper", "augment": "false",
                                           "updates": "1e3", "max_shift_px": "none"})
    assert (cfg.lr, cfg.init, cfg.augment, cfg.updates, cfg.max_shift_px) == (0.02, "paper", False, 1000, None)
    assert TrainConfig.from_dict({"preset": "smoke", "lr": 1}).lr == 1.0
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_preset("smoke", {"learning_rate": "1"})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig.from_preset("smoke", {"batch_size": "lots"})
    with pytest.raises(ValueError, match="init"):
        TrainConfig.from_preset("smoke", {"init": "xavier"})


def test_learning_rate_schedule():
    constant = TrainConfig.from_preset("paper")
    assert lr_at(constant, 0) == lr_at(constant, 149_999) == 0.01
    cosine = TrainConfig.from_preset("smoke", {"lr_schedule": "cosine", "warmup_updates": 2, "updates": 12})
    assert lr_at(cosine, 0) == pytest.approx(0.005)
    assert lr_at(cosine, 2) == pytest.approx(0.01)
    assert lr_at(cosine, 11) < 0.001


# -- tensors --------------------------------------------------------------------------
def test_tensors_round_trip_and_forgiving_paths(tmp_path):
    tensors = write_toy_tensors(tmp_path, n_train=30, n_val=5)
    for given in (tmp_path, tmp_path / "tensors", tensors):
        assert tdata.resolve_tensors_dir(given, RES) == tensors
    split = tdata.read_split(tensors, "train", RES)
    images, class_ids = toy_images(30, 0)
    np.testing.assert_array_equal(split.pixels, images)
    np.testing.assert_array_equal(split.labels, class_ids - 1)
    assert split.image_ids[:2] == ["p/A00", "p/A01"]
    with pytest.raises(tdata.TensorDataError, match="r64"):
        tdata.resolve_tensors_dir(tmp_path, 64)


def test_bad_class_id_is_reported_with_the_file(tmp_path):
    tensors = tmp_path / "r32"
    tdata.write_split(tensors, "train", ["a"], [11], np.zeros((1, RES, RES), np.uint8))
    with pytest.raises(tdata.TensorDataError, match="part-00000.parquet"):
        tdata.read_split(tensors, "train", RES)


def test_crystal_auc_matches_sklearn_and_handles_one_sided_sets():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    probs = rng.dirichlet(np.ones(10), 200).astype(np.float32)
    probs[:20] = probs[:20].round(1)  # ties
    positive = np.isin(labels, [2, 4, 6])
    score = probs.astype(np.float64)[:, [2, 4, 6]].sum(1)  # crystal_prob is summed in float64
    assert crystal_auc(labels, probs) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert crystal_auc(np.zeros(5, int), probs[:5]) is None
    assert crystal_auc(np.full(5, 2), probs[:5]) is None


# -- training runs ----------------------------------------------------------------------
def test_artifact_round_trip(reference, data_dir):
    result, seen = reference
    assert result.finished and result.updates == SMOKE.updates
    artifact = torch.load(result.path, map_location="cpu", weights_only=True)
    assert artifact["trained_on"] == "synthetic"
    assert artifact["config"]["preset"] == "smoke" and artifact["model_config"]["resolution"] == RES
    assert artifact["tensor_files"] == tdata.file_digests(data_dir / "tensors" / f"r{RES}")
    assert len(artifact["tensors_sha256"]) == 64
    assert [h["update"] for h in artifact["history"]] == [6, 12]
    assert {"loss", "train_acc", "val_acc", "images_per_s"} <= set(artifact["history"][-1])
    assert artifact["val_accuracy"] == result.val_accuracy
    np.testing.assert_array_equal(artifact["normalization"]["mean"].numpy(),
                                  tdata.read_stats(data_dir / "tensors" / f"r{RES}", RES)[0])
    assert [s["update"] for s in seen] == [3, 6, 9, 12]
    assert {"eta_s", "images_per_s", "loss"} <= set(seen[-1])
    assert not checkpoint_path_for(result.path).exists()  # its job ends with the artifact

    model = load(result.path, device="cpu")
    assert not model.training
    val = tdata.read_split(data_dir / "tensors" / f"r{RES}", "val", RES)
    probs = predict_proba(model, val.pixels)
    np.testing.assert_allclose(probs, result.val_probs, atol=1e-5)
    assert result.val_accuracy == pytest.approx(float((probs.argmax(1) == val.labels).mean()))


def test_same_seed_same_weights_and_a_different_seed_differs(reference, data_dir, tmp_path):
    first = reference[0].model.state_dict()
    again = train(SMOKE, data_dir, tmp_path / "again.pt").model.state_dict()
    for key in first:
        torch.testing.assert_close(again[key], first[key], rtol=0, atol=0)
    other = train(SMOKE.with_overrides({"seed": 1, "updates": 1}), data_dir, tmp_path / "other.pt")
    assert not torch.equal(other.model.conv1.weight, reference[0].model.conv1.weight)


def test_interrupted_run_resumes_to_the_same_weights(reference, data_dir, tmp_path):
    out = tmp_path / "model.pt"
    first = train(SMOKE.with_overrides({"max_updates_this_session": 5}), data_dir, out, resume=True)
    assert not first.finished and first.path is None and first.updates == 5
    assert checkpoint_path_for(out).is_file() and not out.exists()

    with pytest.raises(ValueError, match="lr"):
        train(SMOKE.with_overrides({"lr": 0.5}), data_dir, out, resume=True)

    second = train(SMOKE, data_dir, out, resume=True)
    assert second.finished and second.updates == SMOKE.updates and out.is_file()
    assert [h["update"] for h in second.history] == [6, 12]
    expected = reference[0].model.state_dict()
    for key, value in load(out, device="cpu").state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_cli_trains_and_prints_a_summary(data_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    training_cli.add_arguments(parser)
    args = parser.parse_args([
        "--tensors", str(data_dir), "--out", str(tmp_path / "m" / "model.pt"), "--preset", "smoke",
        "--set", "updates=2", "--set", "augment=false", "--trained-on", "synthetic", "--quiet",
    ])
    assert training_cli.run(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["updates"] == 2 and summary["device"] == "cpu"
    assert load(summary["path"]).artifact_meta["config"]["augment"] is False


def test_identity_key_ignores_runtime_fields_only():
    base = TrainConfig.from_preset("smoke")
    watched_differently = base.with_overrides({"log_every": "1", "eval_every": "2", "max_updates_this_session": "4"})
    assert watched_differently.identity_key() == base.identity_key()
    assert base.with_overrides({"lr": "0.5"}).identity_key() != base.identity_key()
    assert base.with_overrides({"seed": "1"}).identity_key() != base.identity_key()
