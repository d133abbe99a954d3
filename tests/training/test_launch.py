"""Training as its own process: the torchrun command, the result file, the Pipes reporter."""

from pathlib import Path

import numpy as np
import pytest

from crystal_pipeline.training.launch import torchrun_command
from crystal_pipeline.training.loop import TrainResult
from crystal_pipeline.training.pipes_reporting import PIPES_CONTEXT_ENV, pipes_reporter
from crystal_pipeline.training.result_file import read_result, write_result


def test_torchrun_command_names_every_argument_the_trainer_needs():
    command = torchrun_command(tensors_dir="/d/tensors/r64", out_path="/s/model.pt", result_path="/s/r.npz",
                               preset="demo", overrides={"lr": "0.5", "batch_size": "8"}, nproc_per_node=4,
                               device="cuda", trained_on="synthetic", resume=True, python="/py")
    assert command[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert command[6:9] == ["-m", "crystal_pipeline", "train"]
    joined = " ".join(command)
    for part in ("--tensors /d/tensors/r64", "--out /s/model.pt", "--result /s/r.npz", "--preset demo",
                 "--device cuda", "--trained-on synthetic", "--set batch_size=8 --set lr=0.5"):
        assert part in joined
    assert command[-1] == "--resume"
    assert "--resume" not in torchrun_command(tensors_dir="t", out_path="o", result_path="r", preset="smoke")
    with pytest.raises(ValueError):
        torchrun_command(tensors_dir="t", out_path="o", result_path="r", preset="smoke", nproc_per_node=0)


def test_result_file_round_trips_what_train_returned(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), 7).astype(np.float32)
    result = TrainResult(path=tmp_path / "model.pt", finished=True, updates=12,
                         history=[{"update": 6, "val_acc": 0.5}], val_accuracy=0.5, crystal_auc=None,
                         images_per_s=80.5, device="cpu", seconds=1.25, checkpoint_path=tmp_path / "model.pt.ckpt",
                         val_image_ids=[f"P/A{i:02d}" for i in range(7)], val_class_ids=np.arange(1, 8),
                         val_probs=probs, precision="bf16")
    lines = [{"update": 3, "loss": 2.0}]
    back, progress = read_result(write_result(result, tmp_path / "r.npz", progress=lines))
    assert progress == lines
    assert back.path == result.path and back.checkpoint_path == result.checkpoint_path
    for name in ("finished", "updates", "history", "val_accuracy", "crystal_auc", "images_per_s", "device",
                 "seconds", "val_image_ids", "precision"):
        assert getattr(back, name) == getattr(result, name), name
    np.testing.assert_array_equal(back.val_class_ids, result.val_class_ids)
    np.testing.assert_array_equal(back.val_probs, probs)  # bit for bit: promotion must not depend on the launcher

    stopped = TrainResult(path=None, finished=False, updates=5, history=[], val_accuracy=None, crystal_auc=None,
                          images_per_s=1.0, device="cpu", seconds=0.1, checkpoint_path=Path("c"))
    back, _ = read_result(write_result(stopped, tmp_path / "s.npz"))
    assert back.path is None and not back.finished and back.val_probs is None


def test_reporter_is_silent_outside_pipes_and_on_other_ranks(monkeypatch):
    monkeypatch.delenv(PIPES_CONTEXT_ENV, raising=False)
    with pipes_reporter() as reporter:
        assert not reporter.connected
        reporter.progress({"update": 1, "total": 2, "loss": 1.0, "train_acc": 0.5, "images_per_s": 3.0})
        reporter.summary({"world_size": 1})
    monkeypatch.setenv(PIPES_CONTEXT_ENV, "not-read-on-rank-1")
    monkeypatch.setenv("RANK", "1")
    with pipes_reporter() as reporter:
        assert not reporter.connected
