"""Turning found well files into ``images`` rows: hash, probe, quarantine.

A file is decoded once here (cheaply, see ``imaging.probe``) so that an empty,
truncated or undecodable file is quarantined with its reason before anything
downstream trusts it; every other file goes on. Re-ingesting is incremental: a file
whose path, size and modification time match its stored row is not read again, so
a second run over the same archive changes nothing and a new plate adds only its
own rows. A stored file no longer on disk is marked ``vanished`` (it leaves consensus,
tensors and the plate's present wells); when it reappears it is read again.

The archive and the incoming folder never overwrite each other's rows: a scan that
meets a row of the same image id from the other source refuses before writing
(:class:`SourceConflict`), since the image id names no source (docs/decisions.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from crystal_pipeline.ingest.archive import WellFile
from crystal_pipeline.ingest.imaging import UnreadableImage, probe
from crystal_pipeline.warehouse import ImageScope, Warehouse
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse.staging import StagedRows, batches, staged

log = logging.getLogger(__name__)

def _inspect_file(path: str) -> tuple[str | None, int | None, int | None, str | None, str | None]:
    """(sha256, width, height, mode, error) of one file; runs in a worker thread."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return None, None, None, None, f"unreadable file: {error.strerror or error}"
    digest = hashlib.sha256(data).hexdigest()
    try:
        info = probe(path)
    except UnreadableImage as error:
        return digest, None, None, None, str(error)
    return digest, info.width, info.height, info.mode, None


def _inspect_chunk(paths: Sequence[str]) -> list[tuple]:
    return [_inspect_file(p) for p in paths]


def inspect_files(paths: Sequence[str], *, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None, chunk: int = 64) -> list[tuple]:
    """Hash and probe files in parallel over threads, results in input order.

    Threads, not a process pool: this runs inside Dagster's threaded run worker, where
    forking is unsafe (a lock held by another thread stays locked in the child), and
    hashing and Pillow's decoding release the GIL. On the tiny 2 x 96-well archive, 2
    workers: 0.04 s with threads, 0.08 s with the fork pool it replaced, 0.9 s with a
    forkserver pool (docs/reliability.md)."""
    total = len(paths)
    workers = workers or os.cpu_count() or 1
    chunks = [paths[i:i + chunk] for i in range(0, total, chunk)]
    results: list[tuple] = []
    if workers == 1 or total <= chunk:
        for part in chunks:
            results.extend(_inspect_chunk(part))
            if progress:
                progress(len(results), total)
        return results
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inspect") as pool:
        for part in pool.map(_inspect_chunk, chunks):
            results.extend(part)
            if progress:
                progress(len(results), total)
    return results


class SourceConflict(ValueError):
    """A scan found image ids already stored from another source (archive vs incoming)."""


@dataclass
class IngestSummary:
    found: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined_new: int = 0
    vanished: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def ingest_files(
    warehouse: Warehouse,
    files: Iterable[WellFile],
    *,
    source: str = "archive",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    scope: ImageScope | None = None,
) -> IngestSummary:
    """Upsert ``images`` rows for these files, reading only new or changed ones.

    ``scope`` names the stored rows this scan is responsible for (every row of the
    ``source``, e.g. the archive, or one plate imaging), so rows that vanished from
    disk can be reported; default: the rows of ``source``. The whole batch is written
    in one transaction.

    Memory stays flat in the number of files (``files`` may be a generator such as
    ``archive.iter_archive``): the found files, then the inspected rows, are staged on
    disk in batches (``warehouse.staging``), the comparison with the stored rows is SQL,
    and the write inserts the staged rows.
    """
    started = time.perf_counter()
    summary = IngestSummary()
    warehouse.ensure_schema()
    scope = scope or ImageScope.of_source(source)
    with warehouse.staging() as folder:
        with StagedRows(folder / "found.parquet", image_table.FOUND_SCHEMA) as found:
            for seq, wf in enumerate(files):
                found.add((seq, wf.image_id, wf.plate_id, wf.inspection, wf.plate_format, wf.well, wf.well_index,
                           wf.row, wf.col, str(wf.path), wf.error, wf.drop, wf.plate_drops, wf.imaging,
                           *_stat(wf.path)))
        summary.found = found.rows
        plan = image_table.plan_scan(warehouse, found.path, scope, source=source, todo=folder / "todo.parquet")
        summary.new, summary.changed, summary.unchanged = plan.new, plan.changed, plan.unchanged
        summary.vanished = [image_id for image_id, _ in plan.vanished]
        _refuse_other_source(source, plan.clashes)
        log.info("%d files found: %d new, %d changed, %d unchanged", summary.found, summary.new, summary.changed,
                 summary.unchanged)
        with StagedRows(folder / "rows.parquet", image_table.IMAGE_SCHEMA) as rows:
            _inspect_staged(folder / "todo.parquet", rows, source=source, workers=workers, progress=progress,
                            total=summary.new + summary.changed, summary=summary)
        newly_vanished = [image_id for image_id, status in plan.vanished if status != "vanished"]
        if rows.rows or newly_vanished:
            image_table.upsert_images(warehouse, staged(rows.path), vanished=newly_vanished)
    if newly_vanished:
        log.warning("%d files vanished from disk since the last scan (marked vanished), e.g. %s",
                    len(newly_vanished), ", ".join(newly_vanished[:5]))
    summary.seconds = time.perf_counter() - started
    return summary


def _inspect_staged(todo: Path, rows: StagedRows, *, source: str, workers: int | None,
                    progress: Callable[[int, int], None] | None, total: int, summary: IngestSummary) -> None:
    """Hash and probe the staged files to read, batch by batch, and stage their ``images`` rows."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    done = 0
    for batch in batches(todo):
        files = batch.to_pylist()
        report = None if progress is None else (lambda n, _total, base=done: progress(base + n, total))
        inspected = inspect_files([f["path"] for f in files], workers=workers, progress=report)
        for f, (digest, width, height, mode, error) in zip(files, inspected):
            error = f["error"] or error
            if error:
                summary.quarantined_new += 1
            rows.add((f["image_id"], f["plate_id"], f["inspection"], f["plate_format"], f["well"], f["well_index"],
                      f["row"], f["col"], f["path"], digest, width, height, mode,
                      "quarantined" if error else "ok", error, source, f["file_size"], f["file_mtime_ns"], now,
                      f["drop"], f["plate_drops"], f["imaging"]))
        done += len(files)


def _refuse_other_source(source: str, clashes: dict[str, str]) -> None:
    """Raise :class:`SourceConflict` when a found file's id, or a stored row in the scan's
    scope, belongs to the other source (``clashes``: image id -> its stored source):
    upserting or marking it would destroy that row."""
    if not clashes:
        return
    ids = sorted(clashes)
    plates = sorted({i.split("/", 1)[0] for i in ids})
    others = sorted(set(clashes.values()))
    raise SourceConflict(
        f"refusing to ingest {len(ids)} {source} image(s) of plate(s) {', '.join(plates[:5])}: their image ids "
        f"are already stored from source {', '.join(others)} (e.g. {', '.join(ids[:3])}); writing them would "
        f"overwrite those rows. Rename the {source} plate folder (plate ids must be unique across the archive "
        f"and the incoming folder); nothing was written.")


def well_files_from_images(frame: pd.DataFrame) -> list[WellFile]:
    """``images`` rows back into :class:`WellFile` s (quarantined rows keep their reason)."""
    def value(v):
        return None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v

    out = []
    for r in frame.itertuples(index=False):
        out.append(WellFile(
            r.image_id, r.plate_id, value(r.inspection), value(r.plate_format) and int(r.plate_format), r.well,
            value(r.well_index) and int(r.well_index), value(r.row) and int(r.row), value(r.col) and int(r.col),
            Path(r.path), r.error if r.status == "quarantined" else None,
            int(value(getattr(r, "drop", 1)) or 1), int(value(getattr(r, "plate_drops", 1)) or 1),
            value(getattr(r, "imaging", None)) or "visible"))
    return out
