"""Training: config, tensor reading, artifact round trip, repeatability, resume."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
import torch

import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline import tensors as tensor_files
from crystal_pipeline.cli import train as training_cli
from crystal_pipeline.model import load, predict_proba
from crystal_pipeline.model.bf16_cpu import Bf16CrystalNet
from crystal_pipeline.model.fast_cpu import FastCrystalNet
from crystal_pipeline.training import (
    RunState,
    TrainConfig,
    checkpoint_path_for,
    crystal_auc,
    lr_at,
    make_model,
    train,
    training_precision,
)
from crystal_pipeline.training.config import BF16_UPDATES, updates_reason
from crystal_pipeline.training.loop import record_precision, run_precision

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
    """Both splits and the stats, written by the pipeline's own tensor writer."""
    tensors = data_dir / "tensors" / f"r{RES}"
    x, y = toy_images(n_train, seed)
    tensor_files.write_split(tensors, "train", [f"p/A{i:02d}" for i in range(n_train)], y, x, rows_per_part=50)
    tensor_files.save_stats(tensors / "stats.npz", *tensor_files.compute_stats(tensors / "train"))
    xv, yv = toy_images(n_val, seed + 1)
    tensor_files.write_split(tensors, "val", [f"q/B{i:02d}" for i in range(n_val)], yv, xv)
    return tensors


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_toy_tensors(root)  # 96 train images in two part files
    return root


SMOKE = TrainConfig.from_preset("smoke", {"num_threads": 2})
AVX2_ONLY = ["fpu", "sse2", "avx", "avx2", "fma"]  # /proc/cpuinfo flags, as on the Zen 3 box
AMX = [*AVX2_ONLY, "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]  # as on a Sapphire Rapids Xeon


def assert_same_weights(path, expected: dict[str, torch.Tensor]) -> None:
    """The artifact at ``path`` holds exactly (bit for bit) the weights ``expected``."""
    for key, value in load(path, device="cpu").state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


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


def test_training_precision_follows_the_cpu_flags_and_amp():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainConfig.from_preset("demo")
    assert auto.precision == "auto" and SMOKE.precision == "fp32"  # tests' numbers: the same on every CPU
    assert training_precision(auto, cpu, AVX2_ONLY).precision == "fp32"
    assert training_precision(auto, cpu, AMX).precision == "bf16"
    assert training_precision(auto, cuda, AVX2_ONLY).precision == "bf16"  # what amp=True did on CUDA
    no_amp = auto.with_overrides({"amp": "false"})
    assert training_precision(no_amp, cuda, AMX).precision == training_precision(no_amp, cpu, AMX).precision == "fp32"
    forced = training_precision(auto.with_overrides({"precision": "bf16"}), cpu, AVX2_ONLY)
    assert forced.precision == "bf16" and forced.emulated
    assert not training_precision(auto.with_overrides({"precision": "bf16"}), cpu, AMX).emulated
    assert training_precision(auto.with_overrides({"precision": "fp32"}), cpu, AMX).precision == "fp32"
    with pytest.raises(ValueError, match="contradicts amp"):
        auto.with_overrides({"precision": "bf16", "amp": "false"})
    with pytest.raises(ValueError, match="precision must be one of"):
        auto.with_overrides({"precision": "fp16"})
    # resolved per machine, so a run may resume where 'auto' resolves otherwise
    assert auto.with_overrides({"precision": "bf16"}).identity_key() == auto.identity_key()


def test_the_demo_budget_follows_the_arithmetic_the_device_trains_in():
    fast = BF16_UPDATES["demo"]
    plain = TrainConfig.from_preset("demo").updates
    assert fast > plain
    on = lambda device, flags=AMX, overrides=None: TrainConfig.from_preset(  # noqa: E731
        "demo", overrides, device_type=device, cpu_flags=flags).updates
    assert on("cpu") == fast and on("cuda", AVX2_ONLY) == fast
    assert on("cpu", AVX2_ONLY) == plain  # fp32 there: the preset's budget
    assert on("cpu", AVX2_ONLY, {"precision": "bf16"}) == plain  # emulated bf16 is slower, not faster
    assert on("cpu", AMX, {"precision": "fp32"}) == on("cpu", AMX, {"amp": "false"}) == plain
    assert on("cpu", AMX, {"updates": "300"}) == 300  # an explicit budget wins
    # resolved into the config, so the run's identity records it
    assert TrainConfig.from_preset("demo", device_type="cpu", cpu_flags=AMX).identity_key() != \
        TrainConfig.from_preset("demo").identity_key()
    assert TrainConfig.from_preset("smoke", device_type="cpu", cpu_flags=AMX).updates == SMOKE.updates
    # and the run's metadata says where its number came from
    assert updates_reason("demo", fast, overridden=False) == (
        f"{fast:,}: the demo preset's budget where it trains in bf16 ({plain:,} in fp32)")
    assert updates_reason("demo", plain, overridden=False) == f"{plain:,}: the demo preset's"
    assert updates_reason("demo", 300, overridden=True) == "300: set in the run's overrides"


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
        assert tensor_files.resolve_tensors_dir(given, RES) == tensors
    split = tensor_files.read_split(tensors / "train", RES)
    images, class_ids = toy_images(30, 0)
    np.testing.assert_array_equal(split.pixels, images)
    np.testing.assert_array_equal(split.class_ids, class_ids)  # the paper's ids, as stored
    assert split.image_ids[:2] == ["p/A00", "p/A01"] and len(split) == 30
    with pytest.raises(tensor_files.TensorDataError, match="r64"):
        tensor_files.resolve_tensors_dir(tmp_path, 64)
    with pytest.raises(tensor_files.TensorDataError, match="expected 64"):
        tensor_files.read_split(tensors / "train", 64)


def test_bad_class_id_is_refused_by_the_writer_and_reported_by_the_reader(tmp_path):
    with pytest.raises(ValueError, match="class_id 11 outside 1..10"):
        tensor_files.write_split(tmp_path / "r32", "train", ["a"], [11], np.zeros((1, RES, RES), np.uint8))
    assert not (tmp_path / "r32" / "train").exists()
    split_dir = tmp_path / "r32" / "train"
    split_dir.mkdir(parents=True)
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(RES * RES), 1, [None, pa.py_buffer(bytes(RES * RES))])
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array([0], pa.int16()), pixels],
                                        schema=tensor_files.tensor_schema(RES)), split_dir / "part-00000.parquet")
    with pytest.raises(tensor_files.TensorDataError, match="part-00000.parquet: class_id outside 1..10"):
        tensor_files.read_split(split_dir, RES)


def test_crystal_auc_matches_sklearn_and_handles_one_sided_sets():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    class_ids = rng.integers(1, 11, 200)
    probs = rng.dirichlet(np.ones(10), 200).astype(np.float32)
    probs[:20] = probs[:20].round(1)  # ties
    positive = np.isin(class_ids, [3, 5, 7])  # crystal, precipitate_crystal, phase_crystal
    score = probs.astype(np.float64)[:, [2, 4, 6]].sum(1)  # crystal_prob is summed in float64
    assert crystal_auc(class_ids, probs) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert crystal_auc(np.ones(5, int), probs[:5]) is None
    assert crystal_auc(np.full(5, 3), probs[:5]) is None


# -- training runs ----------------------------------------------------------------------
def test_artifact_round_trip(reference, data_dir):
    result, seen = reference
    assert result.finished and result.updates == SMOKE.updates
    artifact = torch.load(result.path, map_location="cpu", weights_only=True)
    assert artifact["trained_on"] == "synthetic"
    assert artifact["config"]["preset"] == "smoke" and artifact["model_config"]["resolution"] == RES
    res_dir = data_dir / "tensors" / f"r{RES}"
    # The one content fingerprint: the same value the tensor writer and the feature cache use.
    assert artifact["tensors_fingerprint"] == tensor_files.fingerprint([res_dir / "train", res_dir / "val"])
    assert [h["update"] for h in artifact["history"]] == [6, 12]
    assert {"loss", "train_acc", "val_acc", "images_per_s"} <= set(artifact["history"][-1])
    assert artifact["val_accuracy"] == result.val_accuracy
    np.testing.assert_array_equal(artifact["normalization"]["mean"].numpy(),
                                  tensor_files.load_stats(res_dir / "stats.npz", RES)[0])
    assert [s["update"] for s in seen] == [3, 6, 9, 12]
    assert {"eta_s", "images_per_s", "loss"} <= set(seen[-1])
    assert not checkpoint_path_for(result.path).exists()  # its job ends with the artifact

    model = load(result.path, device="cpu")
    assert not model.training
    val = tensor_files.read_split(res_dir / "val", RES)
    np.testing.assert_array_equal(result.val_class_ids, val.class_ids)  # ids 1..10, not loss indices
    assert result.val_image_ids == val.image_ids
    probs = predict_proba(model, val.pixels)
    np.testing.assert_allclose(probs, result.val_probs, atol=1e-5)
    assert result.val_accuracy == pytest.approx(float((probs.argmax(1) + 1 == val.class_ids).mean()))


def test_fast_and_bf16_paths_compute_the_trained_models_logits(reference, data_dir):
    """Issue 19 item 6 on trained weights: the smoke run's artifact (the trainer's updates, the
    tensors' own normalization) as labelling loads it. The random-weight checks are
    tests/model/test_fast_inference.py (fp32 paths) and tests/plates/test_precision_labelling.py
    (bf16). Logits, not probabilities: a briefly trained model's softmax is near uniform, and
    would hide a wrong layer. fp32 Winograd and direct: the eager logits to fp32 rounding and the
    same classes; bf16: within bf16 rounding (8 significant bits through six layers)."""
    model = load(reference[0].path, device="cpu")
    assert not torch.equal(model.conv2.weight, make_model(SMOKE).conv2.weight)  # moved from its init
    images = torch.from_numpy(tensor_files.read_split(data_dir / "tensors" / f"r{RES}" / "val", RES).pixels)
    with torch.inference_mode():
        eager = model(images).float()
    scale = float(eager.abs().max())
    paths = {f"fp32 {a}": FastCrystalNet.from_model(model, algorithms={"conv2": a, "conv3": a}, threads=2, sub_batch=16)
             for a in ("winograd", "direct")}
    paths["bf16"] = Bf16CrystalNet.from_model(model, threads=2, sub_batch=16)
    errors = {}
    try:
        for name, fast in paths.items():
            got = fast.logits(images)
            assert got.dtype == torch.float32 and got.shape == eager.shape
            errors[name] = float((got - eager).abs().max()) / scale
            if name != "bf16":
                np.testing.assert_array_equal(got.argmax(1).numpy(), eager.argmax(1).numpy())
    finally:
        for fast in paths.values():
            fast.close()
    assert errors["fp32 winograd"] < 1e-4 and errors["fp32 direct"] < 1e-4, errors
    assert 1e-4 < errors["bf16"] < 0.05, errors  # bf16 really ran, and only rounded


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
    assert_same_weights(out, reference[0].model.state_dict())


def test_stopped_sessions_resume_with_other_runtime_settings_to_the_same_numbers(reference, data_dir, tmp_path):
    """A session limit stops with a checkpoint and no model; later sessions that watch the run
    differently (log_every, eval_every, their own limit) continue from the checkpoint, not
    from update 0, and end bit-identical to the uninterrupted run."""
    out = tmp_path / "model.pt"
    ckpt = checkpoint_path_for(out)
    first = train(SMOKE.with_overrides({"max_updates_this_session": 5, "log_every": 1, "eval_every": 2}),
                  data_dir, out, resume=True)
    assert (first.finished, first.path, first.updates, first.checkpoint_path) == (False, None, 5, ckpt)
    assert first.val_probs is None and first.val_class_ids is None and not out.exists()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["update"] == 5 and [h["update"] for h in saved["history"]] == [2, 4]
    res_dir = data_dir / "tensors" / f"r{RES}"
    assert saved["tensors_fingerprint"] == tensor_files.fingerprint([res_dir / "train", res_dir / "val"])

    seen = []
    second = train(SMOKE.with_overrides({"max_updates_this_session": 4, "log_every": 2, "eval_every": 5}),
                   data_dir, out, resume=True, progress=seen.append)
    assert not second.finished and second.path is None and second.updates == 9 and not out.exists()
    assert [s["update"] for s in seen] == [6, 8, 9]  # continued from update 5
    assert [h["update"] for h in second.history] == [2, 4]  # eval_every 5: none in 6..9

    third = train(SMOKE.with_overrides({"log_every": 5, "eval_every": 7}), data_dir, out, resume=True)
    assert third.finished and third.updates == SMOKE.updates and third.path == out and not ckpt.exists()
    assert [h["update"] for h in third.history] == [2, 4, 12]  # eval_every 7: only the last
    assert_same_weights(out, reference[0].model.state_dict())
    np.testing.assert_array_equal(third.val_probs, reference[0].val_probs)
    assert third.val_accuracy == reference[0].val_accuracy


def test_a_bf16_run_resumes_bit_exact_and_its_artifact_records_the_precision(tmp_path):
    """precision='bf16' trains and evaluates under CPU bf16 autocast (emulated on a CPU without
    bf16 units, hence two updates of 4); a stopped bf16 run resumes to the uninterrupted one's
    weights and probabilities bit for bit."""
    data_dir = tmp_path / "data"
    write_toy_tensors(data_dir, n_train=16, n_val=8)
    bf16 = SMOKE.with_overrides({"precision": "bf16", "updates": 2, "batch_size": 4})
    whole = train(bf16, data_dir, tmp_path / "whole.pt")
    artifact = torch.load(whole.path, map_location="cpu", weights_only=True)
    assert whole.precision == artifact["precision"] == artifact["config"]["precision"] == "bf16"
    assert artifact["precision_log"] == [{"from_update": 0, "precision": "bf16"}]
    assert "bf16" in artifact["precision_reason"]

    out = tmp_path / "resumed.pt"
    assert not train(bf16.with_overrides({"max_updates_this_session": 1}), data_dir, out, resume=True).finished
    resumed = train(bf16, data_dir, out, resume=True)
    assert_same_weights(out, whole.model.state_dict())
    np.testing.assert_array_equal(resumed.val_probs, whole.val_probs)
    # The recorded validation probabilities were computed in bf16: close to the fp32 model's, not equal.
    val = tensor_files.read_split(data_dir / "tensors" / f"r{RES}" / "val", RES)
    fp32_probs = predict_proba(load(out, device="cpu"), val.pixels)
    assert not np.array_equal(fp32_probs, whole.val_probs)
    np.testing.assert_allclose(fp32_probs, whole.val_probs, atol=0.05)

    assert torch.load(out, weights_only=True)["precision_log"] == [{"from_update": 0, "precision": "bf16"}]


def test_a_resume_in_another_precision_is_warned_about_and_recorded_as_mixed(caplog):
    state = RunState(update=0)
    record_precision(state, training_precision(SMOKE, torch.device("cpu")))
    state.update = 5
    record_precision(state, training_precision(SMOKE, torch.device("cpu")))  # the same: nothing new
    assert state.precision_log == [{"from_update": 0, "precision": "fp32"}] and run_precision(state) == "fp32"
    with caplog.at_level(logging.WARNING, logger="crystal_pipeline.training.loop"):
        record_precision(state, training_precision(SMOKE.with_overrides({"precision": "bf16"}), torch.device("cpu"),
                                                   AMX))
    assert "not be bit-identical" in caplog.text
    assert state.precision_log[1] == {"from_update": 5, "precision": "bf16"} and run_precision(state) == "mixed"


def test_resume_refuses_a_checkpoint_of_other_tensors(data_dir, tmp_path):
    out = tmp_path / "model.pt"
    train(SMOKE.with_overrides({"max_updates_this_session": 2}), data_dir, out, resume=True)
    other = tmp_path / "other"
    write_toy_tensors(other, seed=5)
    with pytest.raises(ValueError, match="tensors changed"):
        train(SMOKE, other, out, resume=True)


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
