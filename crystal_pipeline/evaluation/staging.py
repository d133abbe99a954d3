"""Where a training run works before its model gets a version: one folder per run.

```
<models>/_training/<identity_key>/<run_id>/model.pt        the artifact, until promotion moves it
                                          /model.pt.ckpt   the checkpoint a stopped run leaves
                                          /run.lock        flock'ed while a run works here
                                          /FINISHED        the run ended (a kept checkpoint is not resumable)
```

``identity_key`` is ``TrainConfig.identity_key()``: a config without its runtime fields,
so changing ``log_every`` or ``max_updates_this_session`` still resumes. A run claims
its folder by taking an exclusive ``flock`` on ``run.lock`` (:mod:`crystal_pipeline.locks`)
and keeps the descriptor open for its whole life, so two concurrent runs never share
files; ``resume`` adopts the newest checkpoint of the same identity whose folder no
running run holds. The kernel drops the lock when its holder dies (SIGKILL, OOM, a lost
pod), so a dead run's folder is resumable at once: there is no "stale lock" to judge,
and neither a reused pid nor two runs judging the same lock stale can break it. The
file's text (run id, pid, host, start) is for people only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from crystal_pipeline import locks
from crystal_pipeline.layout import DataLayout

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = MODEL_FILE + ".ckpt"  # training.checkpoint_path_for(model.pt)
LOCK_FILE = "run.lock"
RESULT_FILE = "train_result.npz"  # what an out-of-process trainer hands back (training.result_file)
FINISHED_FILE = "FINISHED"


@dataclass
class StagingRun:
    """A claimed staging folder. ``resumed`` is True when it holds an earlier run's checkpoint."""

    folder: Path
    run_id: str
    resumed: bool
    #: The descriptor whose flock holds ``run.lock``; None once released.
    lock_fd: int | None = field(default=None, repr=False, compare=False)

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def result_path(self) -> Path:
        return self.folder / RESULT_FILE

    def release(self, *, finished: bool) -> None:
        """Give the folder up. A finished run's folder is removed when nothing but its lock
        is left; otherwise it is marked finished so a kept checkpoint is never resumed."""
        if finished:
            (self.folder / FINISHED_FILE).touch()
        # Unlinked while still held: a claimer that opened the old file notices (locks.py).
        (self.folder / LOCK_FILE).unlink(missing_ok=True)
        if finished and {p.name for p in self.folder.iterdir()} <= {FINISHED_FILE}:
            for p in self.folder.iterdir():
                p.unlink()
            self.folder.rmdir()
        if self.lock_fd is not None:
            locks.release(self.lock_fd)
            self.lock_fd = None

    def __enter__(self) -> "StagingRun":
        return self

    def __exit__(self, *exc) -> None:
        # An exception leaves the checkpoint resumable; a clean exit is the caller's release.
        if self.lock_fd is not None:
            self.release(finished=False)


def claim(layout: DataLayout, identity_key: str, run_id: str, *, resume: bool) -> StagingRun:
    """A staging folder for this run, locked: with ``resume`` the newest unheld checkpoint of
    ``identity_key`` (newest by modification time), else (or when there is none) a new
    ``<identity_key>/<run_id>`` folder."""
    if resume:
        for ckpt in resumable_checkpoints(layout, identity_key):
            fd = _try_lock(ckpt.parent, run_id)
            if fd is None:
                continue
            # Not consumed or finished between the listing and the lock.
            if ckpt.is_file() and not (ckpt.parent / FINISHED_FILE).exists():
                return StagingRun(ckpt.parent, run_id, resumed=True, lock_fd=fd)
            locks.release(fd)
    folder = layout.training_run_dir(identity_key, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(folder, run_id)
    if fd is None:
        raise RuntimeError(f"staging folder {folder} is held by another run with the same id")
    return StagingRun(folder, run_id, resumed=False, lock_fd=fd)


def resumable_checkpoints(layout: DataLayout, identity_key: str) -> list[Path]:
    """Checkpoints of unfinished runs of ``identity_key``, newest first (held or not)."""
    root = layout.training_identity_dir(identity_key)
    found = [p for p in root.glob(f"*/{CHECKPOINT_FILE}") if not (p.parent / FINISHED_FILE).exists()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _try_lock(folder: Path, run_id: str) -> int | None:
    """Lock ``folder/run.lock`` without waiting: its descriptor (the lock lasts while it is
    open), or None while another run holds it. Records who holds it, for people."""
    try:
        fd = locks.try_acquire(folder / LOCK_FILE)
    except FileNotFoundError:  # the folder was removed (a finished run) since it was listed
        return None
    if fd is None:
        return None
    owner = json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                        "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner, 0)
    return fd


def checkpoint_update(path: Path) -> int:
    """The update a training checkpoint was written at (what a resume continues from)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["update"])
