"""``inspect_files`` runs inside Dagster's threaded run worker: it must not fork it (issue 18)."""

from __future__ import annotations

import os

from crystal_pipeline.ingest.image_files import inspect_files


def test_inspect_files_never_forks_and_matches_the_serial_result(tiny_archive, monkeypatch):
    paths = sorted(str(p) for p in tiny_archive.rglob("*.png"))
    assert len(paths) > 64  # more than one chunk: the parallel path
    serial = inspect_files(paths, workers=1)

    def no_fork():
        raise AssertionError("inspect_files forked the (multi-threaded) calling process")

    monkeypatch.setattr(os, "fork", no_fork)
    progress: list[tuple[int, int]] = []
    parallel = inspect_files(paths, workers=2, progress=lambda done, total: progress.append((done, total)))
    assert parallel == serial
    assert progress[-1] == (len(paths), len(paths))
    assert all(error is None and len(digest) == 64 for digest, *_, error in parallel)
