"""The preprocessed tensors: Parquet files of 8-bit squares that training reads with pyarrow.

Layout (DESIGN.md, "Tensors (Parquet)"): ``<data_dir>/tensors/r<res>/<split>/part-NNNNN.parquet``
with columns ``image_id`` (string), ``class_id`` (int16: ten classes, non-null, labelled
images only) and ``pixels`` (``fixed_size_binary(res*res)``, row-major uint8), plus
``r<res>/stats.npz`` with the training split's per-pixel float32 ``mean`` and ``std``.

Guarantees this module keeps, so the assets around it stay thin:

- Streaming: rows are decoded in parallel and written a row group at a time; memory is
  bounded by the decode window and one row group per split, whatever the archive size.
- Atomic per split: each split is written into a hidden temp directory beside its target
  and renamed into place only when every split of the write is complete. A crash leaves
  the previous tensors (or nothing) under the split's name, never half a split, and
  readers never see old and new part files mixed.
- Bad files never crash a write: an image that fails to decode here is skipped and listed
  in the summary (ingest should already have quarantined it).
- A content fingerprint (sha256 over resolution, image ids, class ids and pixels, not
  over Parquet bytes, so it survives a pyarrow upgrade or a different part size)
  identifies "the tensors a model was trained on"; :func:`fingerprint` recomputes it
  from the files and equals the summary's value.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import tee
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline.ingest.imaging import UnreadableImage, decode_many

PART_GLOB = "part-*.parquet"
#: Rows per Parquet row group: bounds the writer's buffer (4 MiB per split at 128 px; 1024
#: rows measured ~80 MB more peak RSS) and is the unit a streaming reader holds at once.
ROW_GROUP_ROWS = 256
#: Pixel std (in 0..255 grey levels) below which a pixel counts as constant. Normalising by
#: a smaller std would blow quantisation noise up into huge inputs (and 0 would divide by
#: zero), so :func:`compute_stats` floors std here: one grey level, the 8-bit resolution.
STD_FLOOR = 1.0
_FINGERPRINT_TAG = b"crystal_pipeline.tensors/v1\0"
_TEMP_RE = re.compile(r"^\.(?P<split>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def tensor_schema(resolution: int) -> pa.Schema:
    """The fixed Parquet schema; the resolution also travels as schema metadata."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("class_id", pa.int16(), nullable=False),
            pa.field("pixels", pa.binary(resolution * resolution), nullable=False),
        ],
        metadata={b"resolution": str(resolution).encode()},
    )


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


class _SplitHasher:
    """Per-split digest over (image_id, class_id, pixels) in row order, at one resolution."""

    def __init__(self, resolution: int):
        self._h = hashlib.sha256(_FINGERPRINT_TAG + f"r{resolution}\0".encode())

    def update(self, image_ids: Sequence[str], class_ids: Sequence[int], pixels: Sequence[bytes]):
        h = self._h
        for image_id, class_id, px in zip(image_ids, class_ids, pixels):
            raw = image_id.encode("utf-8")
            h.update(len(raw).to_bytes(4, "little") + raw + int(class_id).to_bytes(4, "little", signed=True))
            h.update(px)

    def digest(self) -> bytes:
        return self._h.digest()


def _combine(named_digests: Iterable[tuple[str, bytes]]) -> str:
    """Order-independent over splits (sorted by name), so callers may list dirs in any order."""
    h = hashlib.sha256(_FINGERPRINT_TAG + b"set\0")
    for name, digest in sorted(named_digests):
        h.update(name.encode("utf-8") + b"\0" + digest)
    return h.hexdigest()


class _SplitWriter:
    """Streams one split into a hidden temp dir: a row group at a time, parts of a fixed size."""

    def __init__(self, out_dir: Path, split: str, resolution: int, rows_per_part: int,
                 compression: str):
        self.split = split
        self.target = out_dir / split
        self.tmp = out_dir / f".{split}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir(parents=True)
        self.schema = tensor_schema(resolution)
        self.width = resolution * resolution
        self.rows_per_part = rows_per_part
        self.row_group_rows = min(ROW_GROUP_ROWS, rows_per_part)
        self.compression = compression
        self.hasher = _SplitHasher(resolution)
        self.rows = 0
        self._part_rows = 0
        self._part_index = 0
        self._writer: pq.ParquetWriter | None = None
        self._ids: list[str] = []
        self._classes: list[int] = []
        self._pixels: list[bytes] = []

    def append(self, image_id: str, class_id: int, pixels: bytes) -> None:
        self._ids.append(image_id)
        self._classes.append(class_id)
        self._pixels.append(pixels)
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
        pixels = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(self.width), n, [None, pa.py_buffer(b"".join(self._pixels))])
        table = pa.Table.from_arrays(
            [pa.array(self._ids, pa.string()), pa.array(self._classes, pa.int16()), pixels],
            schema=self.schema)
        self.hasher.update(self._ids, self._classes, self._pixels)
        if self._writer is None:
            self._writer = self._open_part()
        self._writer.write_table(table, row_group_size=n)
        self.rows += n
        self._part_rows += n
        self._ids, self._classes, self._pixels = [], [], []
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

    def commit(self) -> None:
        """Two renames on one filesystem; the old split is deleted only once the new is in."""
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.split}.old-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            os.rename(self.target, old)
        try:
            os.rename(self.tmp, self.target)
        except BaseException:
            if old is not None:
                os.rename(old, self.target)  # put the previous split back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp/old dirs left by a writer that was killed (its pid is gone) are garbage."""
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        m = _TEMP_RE.match(entry.name)
        if not (m and entry.is_dir()):
            continue
        pid = int(m["pid"])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_tensors(
    rows: Iterable[tuple[str, int, str, str | os.PathLike]],
    out_dir: str | os.PathLike,
    resolution: int = 128,
    *,
    workers: int | None = None,
    rows_per_part: int = 4096,
    progress: Callable[[int, int | None], None] | None = None,
    splits: Iterable[str] = (),
    chunksize: int = 16,
    compression: str = "zstd",
) -> TensorWriteSummary:
    """Decode ``rows`` and write them as Parquet under ``out_dir/<split>/``.

    ``out_dir`` is the resolution's directory (``DataLayout.tensors_dir(resolution)``).
    ``rows`` are ``(image_id, class_id, split, path)``, ideally sorted by image_id: row
    order is kept and is part of the fingerprint. Every split named in ``rows`` or in
    ``splits`` is replaced (an empty split gets one empty part); other splits on disk are
    left alone. ``progress(done, total)`` is called about every 1% (``total`` is None
    when ``rows`` has no length).
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if rows_per_part < 1:
        raise ValueError(f"rows_per_part must be positive, got {rows_per_part}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
    every = max(1, (total or 25_600) // 100)
    started = time.perf_counter()

    writers: dict[str, _SplitWriter] = {}

    def writer_for(split: str) -> _SplitWriter:
        if split not in writers:
            if not split or split.startswith(".") or "/" in split or os.sep in split:
                raise ValueError(f"invalid split name {split!r}")
            writers[split] = _SplitWriter(out, split, resolution, rows_per_part, compression)
        return writers[split]

    failures: list[DecodeFailure] = []
    done = 0
    decoded = None
    try:
        for split in splits:
            writer_for(split)
        meta_rows, path_rows = tee(iter(rows))
        paths = (row[3] for row in path_rows)
        decoded = decode_many(paths, resolution, workers=workers, chunksize=chunksize,
                              as_bytes=True)
        for (image_id, class_id, split, _path), (_, result) in zip(meta_rows, decoded):
            if class_id is None:
                raise ValueError(f"{image_id}: tensors hold labelled images only (class_id is None)")
            writer = writer_for(split)
            if isinstance(result, UnreadableImage):
                failures.append(DecodeFailure(str(image_id), result.reason))
            else:
                writer.append(str(image_id), int(class_id), result)
            done += 1
            if progress is not None and done % every == 0:
                progress(done, total)
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        if decoded is not None:
            decoded.close()  # stops the worker pool now, not whenever the GC gets to it
    # Sequential renames: a crash between two splits' commits (microseconds) would pair a
    # new split with an old one; the content fingerprint tells the two states apart.
    for writer in writers.values():
        writer.commit()
    if progress is not None and done % every != 0:
        progress(done, total)

    seconds = time.perf_counter() - started
    split_digests = {name: w.hasher.digest() for name, w in writers.items()}
    bytes_written = sum(p.stat().st_size for w in writers.values() for p in w.target.glob(PART_GLOB))
    return TensorWriteSummary(
        out_dir=out,
        resolution=resolution,
        rows_per_split={name: w.rows for name, w in sorted(writers.items())},
        failures=failures,
        seconds=seconds,
        images_per_s=done / seconds if seconds > 0 else 0.0,
        bytes_written=bytes_written,
        fingerprint=_combine(split_digests.items()),
        split_fingerprints={name: d.hex() for name, d in sorted(split_digests.items())},
    )


def _parts(split_dir: str | os.PathLike) -> list[Path]:
    parts = sorted(Path(split_dir).glob(PART_GLOB))
    if not parts:
        raise FileNotFoundError(f"no {PART_GLOB} under {split_dir}")
    return parts


def split_resolution(split_dir: str | os.PathLike) -> int:
    """The square side of a split's images, from its schema."""
    schema = pq.read_schema(_parts(split_dir)[0])
    width = schema.field("pixels").type.byte_width
    side = math.isqrt(width)
    if side * side != width:
        raise ValueError(f"{split_dir}: pixels of {width} bytes are not a square image")
    return side


def count_rows(split_dir: str | os.PathLike) -> int:
    """Rows in a split from the Parquet footers alone (no pixels read); 0 when absent."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(Path(split_dir).glob(PART_GLOB)))


def pixel_width(split_dir: str | os.PathLike) -> int | None:
    """Bytes per ``pixels`` value from the schema; None when the split is absent."""
    parts = sorted(Path(split_dir).glob(PART_GLOB))
    return pq.read_schema(parts[0]).field("pixels").type.byte_width if parts else None


def _pixels_view(column: pa.Array, side: int) -> np.ndarray:
    """Zero-copy view of a fixed_size_binary column as (n, side, side) uint8."""
    width = side * side
    data = column.buffers()[1]
    flat = np.frombuffer(data, dtype=np.uint8, count=len(column) * width,
                         offset=column.offset * width)
    return flat.reshape(len(column), side, side)


def iter_batches(split_dir: str | os.PathLike, batch_rows: int = 1024
                 ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Stream a split as ``(image_ids, class_ids int64, pixels uint8 (n, res, res))``.

    The pixel arrays are read-only views into Arrow memory; copy one to keep or modify it.
    """
    side = split_resolution(split_dir)
    for part in _parts(split_dir):
        with pq.ParquetFile(part) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows):
                if batch.num_rows == 0:
                    continue
                yield (batch.column("image_id").to_pylist(),
                       batch.column("class_id").to_numpy().astype(np.int64),
                       _pixels_view(batch.column("pixels"), side))


def read_split(split_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A whole split in memory: ``(image_ids, class_ids int64 (N,), pixels uint8 (N, res, res))``.

    The pixel array is allocated once at its final size (no concatenation copy), so the
    peak is the split's size plus one batch.
    """
    side = split_resolution(split_dir)
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in _parts(split_dir))
    image_ids: list[str] = []
    class_ids = np.empty(n, dtype=np.int64)
    pixels = np.empty((n, side, side), dtype=np.uint8)
    at = 0
    for ids, classes, px in iter_batches(split_dir):
        k = len(ids)
        image_ids.extend(ids)
        class_ids[at:at + k] = classes
        pixels[at:at + k] = px
        at += k
    return image_ids, class_ids, pixels


def compute_stats(split_dir: str | os.PathLike, batch_rows: int = 256,
                  std_floor: float = STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and std (population, 0..255 units) of a split, streamed.

    Sums of x and x^2 are accumulated exactly in int64 (255^2 fits uint16, so the square
    needs no float), which avoids the cancellation of float running sums; std is floored
    at ``std_floor`` (see :data:`STD_FLOOR`). Returns float32 ``(res, res)`` images.
    """
    side = split_resolution(split_dir)
    total = np.zeros((side, side), dtype=np.int64)
    total_sq = np.zeros((side, side), dtype=np.int64)
    n = 0
    for _, _, px in iter_batches(split_dir, batch_rows):
        x = px.astype(np.uint16)
        total += x.sum(axis=0, dtype=np.int64)
        total_sq += np.multiply(x, x).sum(axis=0, dtype=np.int64)
        n += len(px)
    if n == 0:
        raise ValueError(f"{split_dir}: no images to compute statistics from")
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var), std_floor)
    return mean.astype(np.float32), std.astype(np.float32)


def save_stats(path: str | os.PathLike, mean: np.ndarray, std: np.ndarray) -> None:
    """Write ``stats.npz`` (float32 ``mean`` and ``std``) atomically: temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    if mean.shape != std.shape:
        raise ValueError(f"mean {mean.shape} and std {std.shape} differ in shape")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mean=mean, std=std)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 images from :func:`save_stats`."""
    with np.load(path) as z:
        return z["mean"].astype(np.float32), z["std"].astype(np.float32)


def fingerprint(split_dirs: Iterable[str | os.PathLike] | str | os.PathLike) -> str:
    """Recompute the content fingerprint of written splits (one dir or several).

    Equals :attr:`TensorWriteSummary.fingerprint` of the write that produced exactly these
    splits; splits are keyed by directory name, so the order given does not matter.
    """
    if isinstance(split_dirs, (str, os.PathLike)):
        split_dirs = [split_dirs]
    digests = []
    for split_dir in split_dirs:
        hasher = _SplitHasher(split_resolution(split_dir))
        for ids, classes, px in iter_batches(split_dir):
            width = px.shape[1] * px.shape[2]
            flat = px.reshape(len(ids), width)
            hasher.update(ids, classes.tolist(), [row.tobytes() for row in flat])
        digests.append((Path(split_dir).name, hasher.digest()))
    return _combine(digests)
