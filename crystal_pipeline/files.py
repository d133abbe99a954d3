"""Writing and hashing files the way every stage needs: atomically, and by content.

Readers of our outputs (the Dagster UI, a browser refreshing a report, the sensor, a
resumed training run) must never see half a file, so every write goes to a temp file
in the target's folder, is flushed to disk, and is renamed over the target: a crash
at any moment leaves the old file or the new one. One implementation, so a fix to
it (permissions, fsync, clean-up) reaches every writer.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

_CHUNK = 1 << 20
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o644,
                 durable: bool = True) -> Path:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    ``write`` may be ``torch.save``'s or ``np.savez``'s partial, ``pq.write_table`` with
    the handle, or anything that writes bytes to a binary file object. The file gets
    ``mode`` (mkstemp's 0600 would hide a report from a web server). On any exception
    the temp file is removed and the target is left as it was. ``durable=False`` skips
    the fsync: readers still never see half a file, but a power loss may lose the write;
    for bulk output that is cheap to make again (the synthetic archive's thousands of
    images, where one fsync per file tripled the run time).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data), durable=durable)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host and is not a zombie.

    The service uses it for the processes it started (their pid files). Locks do not:
    a pid can be reused by an unrelated process, so the tensor writers and the training
    staging folders hold kernel-released flocks instead (:mod:`crystal_pipeline.locks`)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS) or no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state[state.rfind(")") + 2:].split()[0] != "Z"


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 (macOS, musl)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _renameat2()


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths (files or folders) in one atomic step; False where the system
    cannot (not Linux, an old kernel, a filesystem without it), for the caller's fallback.

    ``renameat2(RENAME_EXCHANGE)``: a reader of ``b`` sees the old entry or the new one,
    never neither, which two renames cannot give (the tensor writer's commit)."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))
