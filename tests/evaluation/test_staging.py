"""Staging claims under concurrency and after a SIGKILL: the kernel's flock decides (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from crystal_pipeline.evaluation import staging
from crystal_pipeline.layout import DataLayout

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _leave_lock_of(folder: Path, pid: int) -> None:
    """A ``run.lock`` as a run that is gone left it, naming ``pid``."""
    (folder / staging.LOCK_FILE).write_text(json.dumps(
        {"run_id": "gone", "pid": pid, "host": os.uname().nodename, "since": "2026-01-01T00:00:00"}))


def test_concurrent_claims_of_one_identity_never_share_a_folder(tmp_path):
    layout = DataLayout.under(tmp_path)
    old = layout.training_run_dir("k", "old")
    old.mkdir(parents=True)
    (old / staging.CHECKPOINT_FILE).write_bytes(b"ckpt")
    claimers = 6
    for round_ in range(15):
        _leave_lock_of(old, _dead_pid())  # its run died: every claimer may try to take it over
        barrier = threading.Barrier(claimers)
        claims: list[staging.StagingRun] = []

        def claim(i: int) -> None:
            barrier.wait()
            claims.append(staging.claim(layout, "k", f"run{round_}-{i}", resume=True))

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({c.folder for c in claims}) == claimers, f"round {round_}: two runs share a folder"
        assert [c.folder for c in claims if c.resumed] == [old], f"round {round_}: the checkpoint resumed twice"
        for c in claims:
            c.release(finished=False)


def test_a_killed_holders_folder_is_resumable_whatever_its_pid_names_now(tmp_path):
    layout = DataLayout.under(tmp_path)
    code = (
        "import os, signal, sys\n"
        "from crystal_pipeline.evaluation import staging\n"
        "from crystal_pipeline.layout import DataLayout\n"
        f"run = staging.claim(DataLayout.under({str(tmp_path)!r}), 'k', 'victim', resume=False)\n"
        "run.checkpoint_path.write_bytes(b'ckpt at update 6')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    victim = layout.training_run_dir("k", "victim")
    assert json.loads((victim / staging.LOCK_FILE).read_text())["run_id"] == "victim"  # left behind
    _leave_lock_of(victim, os.getpid())  # the dead run's pid now names a live process (pid reuse)

    with staging.claim(layout, "k", "next", resume=True) as run:
        assert (run.folder, run.resumed) == (victim, True)
        assert staging.claim(layout, "k", "third", resume=True).resumed is False  # held by "next" now
    assert run.lock_fd is None  # __exit__ released it, the checkpoint stays resumable
    assert staging.claim(layout, "k", "fourth", resume=True).folder == victim
