"""Writing the Parquet tensors: decoded archive images (:func:`write_tensors`) or arrays (:func:`write_split`).

Guarantees, so the assets around it stay thin:

- Streaming: rows are decoded in parallel and written a row group at a time; memory is
  bounded by the decode window and one row group per split, whatever the archive size.
- Atomic per split: each split is written into a hidden temp directory beside its target
  and swapped into place (``files.exchange_paths``; two renames where the system cannot
  exchange) only when every split of the write is complete. A crash leaves
  the previous tensors (or nothing) under the split's name, never half a split, and
  readers never see old and new part files mixed (the reader reads one directory's
  files, :mod:`crystal_pipeline.tensors.reader`).
- One writer per folder: a write holds the folder's ``flock`` (``DataLayout.tensors_lock_in``,
  :mod:`crystal_pipeline.locks`) from its first file to its commit, so concurrent writers
  of one resolution (the studies, training and the prepare assets under the multiprocess
  executor) take turns, and any temp folder found while holding it was left by a killed
  writer (the kernel freed its lock): it is removed, no pid judgment needed.
- Bad files never crash a write: an image that fails to decode here is skipped and listed
  in the summary (ingest should already have quarantined it).
- Only valid rows: a row without a class id, or with one outside 1..10, fails the write.
- The content fingerprint (:mod:`crystal_pipeline.tensors.fingerprint`) is computed while
  writing and equals what :func:`~crystal_pipeline.tensors.fingerprint.fingerprint`
  recomputes from the files.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import tee
from pathlib import Path
from typing import NamedTuple

from crystal_pipeline.layout import DataLayout

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline import locks
from crystal_pipeline.faults import crash_point
from crystal_pipeline.files import exchange_paths
from crystal_pipeline.ingest.imaging import DEFAULT_CROP, UnreadableImage, decode_many
from crystal_pipeline.tensors.fingerprint import SplitHasher, combine
from crystal_pipeline.tensors.schema import (
    MAX_CLASS_ID,
    MIN_CLASS_ID,
    PART_GLOB,
    ROW_GROUP_ROWS,
    check_split_name,
    tensor_schema,
)

_TEMP_RE = re.compile(r"^\.(?P<split>.+)\.(?:tmp|old)-\d+-[0-9a-f]+$")

Progress = Callable[[int, "int | None"], None]


class DecodeFailure(NamedTuple):
    """An image skipped by :func:`write_tensors`, and why."""

    image_id: str
    reason: str


@dataclass
class TensorWriteSummary:
    """What a write produced; ``fingerprint`` is the one to record beside a trained model."""

    out_dir: Path
    resolution: int
    rows_per_split: dict[str, int]
    failures: list[DecodeFailure]
    seconds: float
    images_per_s: float
    bytes_written: int
    fingerprint: str
    split_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def rows_written(self) -> int:
        return sum(self.rows_per_split.values())

    def as_dict(self) -> dict:
        """JSON-ready form, e.g. for asset metadata or a benchmark line."""
        return {
            "out_dir": str(self.out_dir),
            "resolution": self.resolution,
            "rows_per_split": dict(self.rows_per_split),
            "rows_written": self.rows_written,
            "failures": [f._asdict() for f in self.failures],
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
            "bytes_written": self.bytes_written,
            "fingerprint": self.fingerprint,
            "split_fingerprints": dict(self.split_fingerprints),
        }


class _SplitWriter:
    """Streams one split into a hidden temp dir: a row group at a time, parts of a fixed size."""

    def __init__(self, out_dir: Path, split: str, resolution: int, rows_per_part: int, compression: str,
                 crop: str = DEFAULT_CROP, uv: bool = False):
        self.split = check_split_name(split)
        self.target = out_dir / split
        self.tmp = out_dir / f".{split}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir(parents=True)
        self.schema = tensor_schema(resolution, crop, uv=uv)
        self.uv = uv
        self.width = resolution * resolution
        self.rows_per_part = rows_per_part
        self.row_group_rows = min(ROW_GROUP_ROWS, rows_per_part)
        self.compression = compression
        self.hasher = SplitHasher(resolution, crop)
        self.rows = 0
        self._part_rows = 0
        self._part_index = 0
        self._writer: pq.ParquetWriter | None = None
        self._ids: list[str] = []
        self._classes: list[int] = []
        self._pixels: list[bytes] = []
        self._uv: list[bytes] = []

    def append(self, image_id: str, class_id: int, pixels: bytes, uv: bytes | None = None) -> None:
        if not MIN_CLASS_ID <= class_id <= MAX_CLASS_ID:
            raise ValueError(f"{image_id}: class_id {class_id} outside {MIN_CLASS_ID}..{MAX_CLASS_ID}")
        if (uv is not None) != self.uv:
            raise ValueError(f"{image_id}: a UV picture is needed exactly when the split has a UV column")
        self._ids.append(image_id)
        self._classes.append(class_id)
        self._pixels.append(pixels)
        if uv is not None:
            self._uv.append(uv)
        room = min(self.row_group_rows, self.rows_per_part - self._part_rows)
        if len(self._ids) >= room:
            self._flush()

    def _open_part(self) -> pq.ParquetWriter:
        path = self.tmp / f"part-{self._part_index:05d}.parquet"
        self._part_index += 1
        self._part_rows = 0
        return pq.ParquetWriter(
            path, self.schema, compression=self.compression,
            use_dictionary=["class_id"], write_statistics=["image_id", "class_id"],
        )

    def _flush(self) -> None:
        if not self._ids:
            return
        n = len(self._ids)
        columns = [pa.array(self._ids, pa.string()), pa.array(self._classes, pa.int16())]
        for rows in (self._pixels, self._uv) if self.uv else (self._pixels,):
            columns.append(pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(self.width), n, [None, pa.py_buffer(b"".join(rows))]))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self.hasher.update(self._ids, self._classes, self._pixels, self._uv if self.uv else None)
        if self._writer is None:
            self._writer = self._open_part()
        self._writer.write_table(table, row_group_size=n)
        self.rows += n
        self._part_rows += n
        self._ids, self._classes, self._pixels, self._uv = [], [], [], []
        if self._part_rows >= self.rows_per_part:
            self._writer.close()
            self._writer = None

    def finish(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.rows == 0:  # an empty split still exists, with its schema, for readers
            self._open_part().close()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self) -> Path | None:
        """One atomic exchange of the new folder with the old (two renames where the system
        has no exchange); returns the previous split's folder, for the caller to delete once
        every split of the write is in."""
        old = None
        if self.target.exists() and exchange_paths(self.tmp, self.target):
            return self.tmp  # now holds the previous split
        if self.target.exists():
            old = self.target.parent / f".{self.split}.old-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            os.rename(self.target, old)
            crash_point("tensors.between_renames")
        try:
            os.rename(self.tmp, self.target)
        except BaseException:
            if old is not None:
                os.rename(old, self.target)  # put the previous split back
            raise
        return old


class _SplitWriters:
    """The splits of one write, opened on first use; finished, aborted or committed together."""

    def __init__(self, out: Path, resolution: int, rows_per_part: int, compression: str,
                 crop: str = DEFAULT_CROP, uv: bool = False):
        self.out, self.resolution, self.crop = out, resolution, crop
        self.rows_per_part, self.compression = rows_per_part, compression
        self.uv = uv
        self.by_split: dict[str, _SplitWriter] = {}

    def __getitem__(self, split: str) -> _SplitWriter:
        if split not in self.by_split:
            self.by_split[split] = _SplitWriter(self.out, split, self.resolution, self.rows_per_part,
                                                self.compression, self.crop, self.uv)
        return self.by_split[split]

    def finish(self) -> None:
        for writer in self.by_split.values():
            writer.finish()

    def abort(self) -> None:
        for writer in self.by_split.values():
            writer.abort()

    def commit(self) -> None:
        # One split after another: a crash between two splits' commits (microseconds) would pair a
        # new split with an old one; the content fingerprint tells the two states apart.
        crash_point("tensors.before_commit")
        olds = []
        for i, writer in enumerate(self.by_split.values()):
            if i:
                crash_point("tensors.between_splits")
            olds.append(writer.commit())
        crash_point("tensors.after_commit")
        for old in filter(None, olds):
            shutil.rmtree(old, ignore_errors=True)


class _ProgressReporter:
    """Calls ``progress(done, total)`` about every 1% of the rows, and once at the end."""

    def __init__(self, progress: Progress | None, total: int | None):
        self.progress, self.total = progress, total
        self.every = max(1, (total or 25_600) // 100)
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None and self.done % self.every == 0:
            self.progress(self.done, self.total)

    def final(self) -> None:
        if self.progress is not None and self.done % self.every != 0:
            self.progress(self.done, self.total)


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp/old dirs found while holding the folder's lock were left by a killed writer."""
    for entry in out_dir.iterdir():
        if _TEMP_RE.match(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def _locked_out_dir(out_dir: str | os.PathLike, resolution: int, rows_per_part: int) -> Iterator[Path]:
    """Check the arguments, create ``out_dir``, hold its writer lock and clear what killed
    writers left in it."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if rows_per_part < 1:
        raise ValueError(f"rows_per_part must be positive, got {rows_per_part}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(DataLayout.tensors_lock_in(out)):
        _remove_stale_temps(out)
        yield out


#: Why a row of a UV write is skipped when its drop has no UV picture.
NO_UV_PICTURE = "no UV picture beside it (tensors with UV need both pictures of every drop)"


def _decode_pairs_into(rows: Iterable[tuple], writers: _SplitWriters, resolution: int, *, workers: int | None,
                       chunksize: int, reporter: _ProgressReporter) -> list[DecodeFailure]:
    """:func:`_decode_into` for rows ``(image_id, class_id, split, path, uv_path)``: both
    pictures decoded in one parallel stream (visible, then UV, per row); a row whose UV
    path is None, or either of whose pictures fails to decode, is skipped and listed."""
    failures: list[DecodeFailure] = []
    meta_rows, path_rows = tee(iter(rows))
    paths = (p for row in path_rows for p in (row[3], row[4] if row[4] is not None else row[3]))
    decoded = decode_many(paths, resolution, workers=workers, chunksize=chunksize, as_bytes=True,
                          crop=writers.crop)
    try:
        for image_id, class_id, split, _path, uv_path in meta_rows:
            (_, visible), (_, uv) = next(decoded), next(decoded)
            if class_id is None:
                raise ValueError(f"{image_id}: tensors hold labelled images only (class_id is None)")
            writer = writers[split]
            bad = next((r for r in (visible, uv) if isinstance(r, UnreadableImage)), None)
            if uv_path is None:
                failures.append(DecodeFailure(str(image_id), NO_UV_PICTURE))
            elif bad is not None:
                failures.append(DecodeFailure(str(image_id), bad.reason))
            else:
                writer.append(str(image_id), int(class_id), visible, uv)
            reporter.step()
    finally:
        decoded.close()
    return failures


def _decode_into(rows: Iterable[tuple], writers: _SplitWriters, resolution: int, *, workers: int | None,
                 chunksize: int, reporter: _ProgressReporter) -> list[DecodeFailure]:
    """Decode every row's image in parallel (order kept) and append it to its split's writer."""
    if writers.uv:
        return _decode_pairs_into(rows, writers, resolution, workers=workers, chunksize=chunksize,
                                  reporter=reporter)
    failures: list[DecodeFailure] = []
    meta_rows, path_rows = tee(iter(rows))
    decoded = decode_many((row[3] for row in path_rows), resolution, workers=workers, chunksize=chunksize,
                          as_bytes=True, crop=writers.crop)
    try:
        for (image_id, class_id, split, _path), (_, result) in zip(meta_rows, decoded):
            if class_id is None:
                raise ValueError(f"{image_id}: tensors hold labelled images only (class_id is None)")
            writer = writers[split]
            if isinstance(result, UnreadableImage):
                failures.append(DecodeFailure(str(image_id), result.reason))
            else:
                writer.append(str(image_id), int(class_id), result)
            reporter.step()
    finally:
        decoded.close()  # stops the worker pool now, not whenever the GC gets to it
    return failures


def _summary(out: Path, resolution: int, writers: _SplitWriters, failures: list[DecodeFailure], done: int,
             seconds: float) -> TensorWriteSummary:
    split_digests = {name: w.hasher.digest() for name, w in writers.by_split.items()}
    by_split = writers.by_split
    return TensorWriteSummary(
        out_dir=out,
        resolution=resolution,
        rows_per_split={name: w.rows for name, w in sorted(by_split.items())},
        failures=failures,
        seconds=seconds,
        images_per_s=done / seconds if seconds > 0 else 0.0,
        bytes_written=sum(p.stat().st_size for w in by_split.values() for p in w.target.glob(PART_GLOB)),
        fingerprint=combine(split_digests.items()),
        split_fingerprints={name: d.hex() for name, d in sorted(split_digests.items())},
    )


def write_tensors(
    rows: Iterable[tuple[str, int, str, str | os.PathLike]],
    out_dir: str | os.PathLike,
    resolution: int = 128,
    *,
    workers: int | None = None,
    rows_per_part: int = 4096,
    progress: Progress | None = None,
    splits: Iterable[str] = (),
    chunksize: int = 16,
    compression: str = "zstd",
    crop: str = DEFAULT_CROP,
    uv: bool = False,
) -> TensorWriteSummary:
    """Decode ``rows`` and write them as Parquet under ``out_dir/<split>/``.

    ``out_dir`` is the resolution's directory (``DataLayout.tensors_dir(resolution)``).
    ``rows`` are ``(image_id, class_id, split, path)``, ideally sorted by image_id: row
    order is kept and is part of the fingerprint. Every split named in ``rows`` or in
    ``splits`` is replaced (an empty split gets one empty part); other splits on disk are
    left alone. ``progress(done, total)`` is called about every 1% (``total`` is None
    when ``rows`` has no length). ``crop`` is the square each picture is cut to
    (``preprocessing.crop``); the schema and the fingerprint record it. With ``uv`` each row
    also names its drop's UV picture (``(..., path, uv_path)``, None where there is none: that
    row is skipped and listed) and the splits get the UV column (``schema.UV_COLUMN``).
    """
    reporter = _ProgressReporter(progress, len(rows) if hasattr(rows, "__len__") else None)  # type: ignore[arg-type]
    started = time.perf_counter()
    failures: list[DecodeFailure] = []

    def fill(writers: _SplitWriters) -> None:
        for split in splits:
            writers[split]
        failures.extend(_decode_into(rows, writers, resolution, workers=workers, chunksize=chunksize,
                                     reporter=reporter))

    with _locked_out_dir(out_dir, resolution, rows_per_part) as out:
        writers = _write_locked(out, resolution, rows_per_part, compression, fill, crop, uv)
        reporter.final()
        return _summary(out, resolution, writers, failures, reporter.done, time.perf_counter() - started)


def _write_locked(out: Path, resolution: int, rows_per_part: int, compression: str,
                  fill: Callable[[_SplitWriters], None], crop: str = DEFAULT_CROP,
                  uv: bool = False) -> _SplitWriters:
    """``fill`` the splits of one write, then commit them all (or abort them all on any error)."""
    writers = _SplitWriters(out, resolution, rows_per_part, compression, crop, uv)
    try:
        fill(writers)
        writers.finish()
    except BaseException:
        writers.abort()
        raise
    writers.commit()
    return writers


def write_split(out_dir: str | os.PathLike, split: str, image_ids: Sequence[str], class_ids: Sequence[int],
                pixels: np.ndarray, *, rows_per_part: int = 4096, compression: str = "zstd",
                crop: str = DEFAULT_CROP, uv: np.ndarray | None = None) -> str:
    """Write images already in memory (uint8 ``(N, res, res)``) as split ``split`` of ``out_dir``.

    The same writer as :func:`write_tensors` (schema, row groups, atomic replace), for
    data derived from written tensors (the training-size study's subsets) and for tests.
    Returns the split's content fingerprint, as :func:`fingerprint` gives it. ``uv``, the
    same drops' UV pictures (same shape), writes the UV column too.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[1] != pixels.shape[2] or not len(pixels) == len(image_ids) == len(class_ids):
        raise ValueError(f"need N square images with N ids and class ids, got pixels {pixels.shape}, "
                         f"{len(image_ids)} ids, {len(class_ids)} class ids")
    if uv is not None:
        uv = np.ascontiguousarray(uv, dtype=np.uint8)
        if uv.shape != pixels.shape:
            raise ValueError(f"UV pictures {uv.shape} must match the visible ones {pixels.shape}")

    def fill(writers: _SplitWriters) -> None:
        writer = writers[split]
        for i, (image_id, class_id, image) in enumerate(zip(image_ids, class_ids, pixels)):
            writer.append(str(image_id), int(class_id), image.tobytes(), None if uv is None else uv[i].tobytes())

    with _locked_out_dir(out_dir, pixels.shape[1], rows_per_part) as out:
        writers = _write_locked(out, pixels.shape[1], rows_per_part, compression, fill, crop, uv is not None)
    return combine([(split, writers[split].hasher.digest())])
