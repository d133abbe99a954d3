"""A training process killed mid-way (SIGKILL) resumes from its last checkpoint.

Library level: `python -m crystal_pipeline train` in a subprocess, killed once its
first checkpoint is on disk, then resumed with `--resume`. The resumed model equals
the uninterrupted one weight for weight (the batch plan and the augmentation are
keyed by the update number, and the checkpoint holds the optimizer's state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from crystal_pipeline.model import load
from crystal_pipeline.training import CHECKPOINT_FORMAT, checkpoint_path_for
from tests.conftest import REPO
from tests.training.test_training import write_toy_tensors

# Checkpoints every 4 updates of 40: a kill lands between two of them.
SETTINGS = ["--set", "updates=40", "--set", "checkpoint_every=4", "--set", "eval_every=20", "--set", "log_every=4",
            "--set", "num_threads=1"]


def train_command(tensors, out, *extra):
    return [sys.executable, "-m", "crystal_pipeline", "train", "--tensors", str(tensors), "--out", str(out),
            "--preset", "smoke", "--device", "cpu", *SETTINGS, *extra]


def test_training_killed_mid_way_resumes_from_its_last_checkpoint(tmp_path):
    write_toy_tensors(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "killed" / "model.pt"
    ckpt = checkpoint_path_for(out)
    process = subprocess.Popen(train_command(tmp_path, out), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.is_file():
            assert process.poll() is None, f"training ended before its first checkpoint:\n{process.stdout.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the kill came before the final artifact"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # whole: written by temp file + rename
    assert saved["format"] == CHECKPOINT_FORMAT
    killed_at = int(saved["update"])
    assert 0 < killed_at < 40

    resumed = subprocess.run(train_command(tmp_path, out, "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {ckpt} at update" in resumed.stderr
    resumed_at = int(resumed.stderr.split(f"resuming {ckpt} at update ")[1].split("/")[0])
    assert resumed_at >= killed_at  # the checkpoint may have advanced between our read and the kill
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["finished"] and summary["updates"] == 40 and out.is_file()

    reference = tmp_path / "uninterrupted" / "model.pt"
    straight = subprocess.run(train_command(tmp_path, reference), cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = load(reference, device="cpu").state_dict()
    for key, value in load(out, device="cpu").state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
