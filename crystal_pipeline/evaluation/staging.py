"""Where a training run works before its model gets a version: one folder per run.

```
<models>/_training/<identity_key>/<run_id>/model.pt        the artifact, until promotion moves it
                                          /model.pt.ckpt   the checkpoint a stopped run leaves
                                          /run.lock        held while a run works here
                                          /FINISHED        the run ended (a kept checkpoint is not resumable)
```

``identity_key`` is ``TrainConfig.identity_key()``: a config without its runtime fields,
so changing ``log_every`` or ``max_updates_this_session`` still resumes. A run claims
its folder by creating ``run.lock`` with ``O_EXCL`` (exactly one process can), so two
concurrent runs never share files; ``resume`` adopts the newest checkpoint of the same
identity whose folder no running run holds. A lock left by a process that died on
this host (its pid is gone) is stale and may be taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from crystal_pipeline.files import process_alive
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
        (self.folder / LOCK_FILE).unlink(missing_ok=True)
        if finished and {p.name for p in self.folder.iterdir()} <= {FINISHED_FILE}:
            for p in self.folder.iterdir():
                p.unlink()
            self.folder.rmdir()

    def __enter__(self) -> "StagingRun":
        return self

    def __exit__(self, *exc) -> None:
        # An exception leaves the checkpoint resumable; a clean exit is the caller's release.
        if (self.folder / LOCK_FILE).exists():
            self.release(finished=False)


def claim(layout: DataLayout, identity_key: str, run_id: str, *, resume: bool) -> StagingRun:
    """A staging folder for this run, locked: with ``resume`` the newest unheld checkpoint of
    ``identity_key`` (newest by modification time), else (or when there is none) a new
    ``<identity_key>/<run_id>`` folder."""
    if resume:
        for ckpt in resumable_checkpoints(layout, identity_key):
            if _try_lock(ckpt.parent, run_id):
                if ckpt.is_file():  # not consumed between the listing and the lock
                    return StagingRun(ckpt.parent, run_id, resumed=True)
                (ckpt.parent / LOCK_FILE).unlink(missing_ok=True)
    folder = layout.training_run_dir(identity_key, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if not _try_lock(folder, run_id):
        raise RuntimeError(f"staging folder {folder} is held by another run with the same id")
    return StagingRun(folder, run_id, resumed=False)


def resumable_checkpoints(layout: DataLayout, identity_key: str) -> list[Path]:
    """Checkpoints of unfinished runs of ``identity_key``, newest first (held or not)."""
    root = layout.training_identity_dir(identity_key)
    found = [p for p in root.glob(f"*/{CHECKPOINT_FILE}") if not (p.parent / FINISHED_FILE).exists()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _try_lock(folder: Path, run_id: str) -> bool:
    """Create ``folder/run.lock`` exclusively; take over a stale one once."""
    for _ in range(2):
        try:
            fd = os.open(folder / LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(folder / LOCK_FILE):
                return False
            (folder / LOCK_FILE).unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S")}, handle)
        return True
    return False


def _stale(lock: Path) -> bool:
    """A lock whose process is gone from this host; unreadable or foreign locks are held."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return False
    try:
        pid = int(owner["pid"])
    except (KeyError, ValueError, TypeError):
        return False
    return not process_alive(pid)


def checkpoint_update(path: Path) -> int:
    """The update a training checkpoint was written at (what a resume continues from)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["update"])
