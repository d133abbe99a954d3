"""The one file lock of the package: ``flock(2)`` on a lock file, released by the kernel.

Two places need mutual exclusion between processes (and between threads that open the
file separately): the tensor writers of one resolution (``DataLayout.tensors_lock``) and
a training run's staging folder (``run.lock``). A lock file that merely *exists* needs a
"stale" judgment when its owner dies (is that pid alive? is it the same process?), and
two processes can both judge it stale; an ``flock`` is dropped by the kernel the moment
its holder's last descriptor closes, SIGKILL included, so there is nothing to judge.

Why ``fcntl.flock`` and not the ``filelock`` library (docs/libraries.md): filelock's
``FileLock`` is this same call on Linux, wrapped with a timeout loop we do not need, and
the tensor readers and the GPU box would gain a dependency for it. Linux and macOS only,
like the rest of the package.

A holder may unlink its lock file (a finished staging folder is removed). Whoever opened
the old file before the unlink would then lock an orphaned inode, so every acquisition
checks that the path still names the inode it locked, and otherwise tries again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ATTEMPTS = 5


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _acquire(path: Path, *, blocking: bool) -> int | None:
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # locked a file its holder had just unlinked: lock the new one
    raise RuntimeError(f"{path}: lock file keeps being replaced while it is being locked")


def try_acquire(path: str | os.PathLike) -> int | None:
    """Lock ``path`` exclusively without waiting: the open descriptor (the lock lives as long
    as it stays open; :func:`release` it), or None when another holder has it."""
    return _acquire(Path(path), blocking=False)


def release(fd: int) -> None:
    """Give a lock from :func:`try_acquire` back (closing the descriptor is what frees it)."""
    os.close(fd)


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[int]:
    """Hold ``path`` exclusively for the ``with`` block, waiting for the current holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, blocking=True)
    assert fd is not None
    try:
        yield fd
    finally:
        os.close(fd)
