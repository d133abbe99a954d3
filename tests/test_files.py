"""The one atomic-write and file-hash helper every stage uses."""

import hashlib
import os

import pytest

from crystal_pipeline.files import atomic_write, atomic_write_bytes, atomic_write_text, file_sha256
from crystal_pipeline.reporting.numbers import finite_or_none


def test_atomic_write_replaces_whole_file_readable_by_others(tmp_path):
    target = tmp_path / "sub" / "report.html"
    atomic_write_text(target, "old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_bytes(target, b"good")

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_durable_false_skips_only_the_fsync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "A01.png"
    atomic_write_bytes(target, b"first", durable=False)
    atomic_write_bytes(target, b"second", durable=False)
    assert synced == []
    assert target.read_bytes() == b"second" and target.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["A01.png"]
    atomic_write_bytes(target, b"third")
    assert len(synced) == 1 and target.read_bytes() == b"third"


def test_file_sha256_matches_hashlib_over_several_chunks(tmp_path):
    data = os.urandom((1 << 20) * 2 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("value, expected", [(float("nan"), None), (None, None), (float("inf"), None),
                                             (0.123456, 0.1235), (3, 3.0)])
def test_finite_or_none(value, expected):
    assert finite_or_none(value) == expected


def test_process_alive_tells_live_from_dead_and_zombie_processes():
    import subprocess
    import sys

    from crystal_pipeline.files import process_alive

    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    import time
    deadline = time.monotonic() + 20
    while process_alive(child.pid) and time.monotonic() < deadline:  # exits, stays a zombie until reaped
        time.sleep(0.05)
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)
