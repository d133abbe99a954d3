"""THE reader of the Parquet tensors, with pyarrow and numpy only (it runs on a bare GPU box).

Every consumer (training, the studies, baselines, the assets' checks and previews, the
benchmarks) reads through here, so there is one label convention: ``class_ids`` are the
paper's ids 1..10, exactly as stored. Only the training loss works with 0-based indices,
and it subtracts 1 where it builds its targets.

Guarantees: rows come in part-file then row order (deterministic); every part is checked
against the format (pixel width, no null pixels, class ids in 1..10) and a violation is a
:class:`TensorDataError` naming the file; a whole split is read into arrays allocated once
at their final size, so the peak is the split plus one batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline.tensors.schema import MAX_CLASS_ID, MIN_CLASS_ID, PART_GLOB, STATS_FILE, TensorDataError


@dataclass
class Split:
    """One split in memory: ids, class ids 1..10 (int64, N) and uint8 images (N, res, res)."""

    image_ids: list[str]
    class_ids: np.ndarray
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def resolution(self) -> int:
        return int(self.pixels.shape[1])


def part_files(split_dir: str | os.PathLike) -> list[Path]:
    """A split's part files in read order; empty when the split is absent."""
    return sorted(Path(split_dir).glob(PART_GLOB))


def _parts(split_dir: str | os.PathLike) -> list[Path]:
    parts = part_files(split_dir)
    if not parts:
        raise TensorDataError(f"no {PART_GLOB} files in {split_dir}")
    return parts


def resolve_tensors_dir(path: str | os.PathLike, resolution: int) -> Path:
    """The ``r<res>`` folder from the data dir, its ``tensors`` folder, or the folder itself.

    The CLI's ``--tensors`` is forgiving because people point it at whichever of the three
    they have in their shell history.
    """
    root = Path(path)
    for candidate in (root, root / f"r{resolution}", root / "tensors" / f"r{resolution}"):
        if (candidate / "train").is_dir() and (candidate / STATS_FILE).is_file():
            return candidate
    raise TensorDataError(
        f"no r{resolution} tensors under {root}: expected {root}/tensors/r{resolution}/"
        f"{{train,val,test}}/{PART_GLOB} and {STATS_FILE} (is the resolution right?)"
    )


def _pixel_width(part: Path) -> int:
    try:
        pixels = pq.read_schema(part).field("pixels").type
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc
    if not pa.types.is_fixed_size_binary(pixels):
        raise TensorDataError(f"{part}: pixels are {pixels}, expected fixed_size_binary")
    return pixels.byte_width


def split_resolution(split_dir: str | os.PathLike) -> int:
    """The square side of a split's images, from its schema."""
    part = _parts(split_dir)[0]
    width = _pixel_width(part)
    side = math.isqrt(width)
    if side * side != width:
        raise TensorDataError(f"{part}: pixels of {width} bytes are not a square image")
    return side


def count_rows(split_dir: str | os.PathLike, max_parts: int | None = None) -> int:
    """Rows in a split (in its first ``max_parts`` part files) from the Parquet footers alone
    (no pixels read); 0 when absent."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in part_files(split_dir)[:max_parts])


def pixel_width(split_dir: str | os.PathLike) -> int | None:
    """Bytes per ``pixels`` value from the schema; None when the split is absent."""
    parts = part_files(split_dir)
    return _pixel_width(parts[0]) if parts else None


def _pixels_view(column: pa.Array, side: int) -> np.ndarray:
    """Zero-copy view of a fixed_size_binary column as (n, side, side) uint8."""
    width = side * side
    data = column.buffers()[1]
    flat = np.frombuffer(data, dtype=np.uint8, count=len(column) * width, offset=column.offset * width)
    return flat.reshape(len(column), side, side)


def _check_batch(part: Path, class_ids: np.ndarray, pixels: pa.Array) -> None:
    if pixels.null_count:
        raise TensorDataError(f"{part}: {pixels.null_count} null pixel rows")
    if class_ids.size and (class_ids.min() < MIN_CLASS_ID or class_ids.max() > MAX_CLASS_ID):
        raise TensorDataError(f"{part}: class_id outside {MIN_CLASS_ID}..{MAX_CLASS_ID}")


def iter_batches(split_dir: str | os.PathLike, batch_rows: int = 1024, max_parts: int | None = None
                 ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Stream a split (its first ``max_parts`` part files; None: all) as
    ``(image_ids, class_ids int64 1..10, pixels uint8 (n, res, res))``.

    The pixel arrays are read-only views into Arrow memory; copy one to keep or modify it.
    """
    side = split_resolution(split_dir)
    for part in _parts(split_dir)[:max_parts]:
        if _pixel_width(part) != side * side:
            raise TensorDataError(f"{part}: pixels are not {side}x{side} like the split's first part")
        try:
            with pq.ParquetFile(part) as pf:
                for batch in pf.iter_batches(batch_size=batch_rows):
                    if batch.num_rows == 0:
                        continue
                    class_ids = batch.column("class_id").to_numpy().astype(np.int64)
                    pixels = batch.column("pixels")
                    _check_batch(part, class_ids, pixels)
                    yield batch.column("image_id").to_pylist(), class_ids, _pixels_view(pixels, side)
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc


def read_split(split_dir: str | os.PathLike, resolution: int | None = None, *,
               max_parts: int | None = None) -> Split:
    """A whole split in memory (see :class:`Split`); ``resolution``, when given, must match.
    ``max_parts`` reads only the first part files (a preview needs no more).

    The pixel array is allocated once at its final size (no concatenation copy), so the
    peak is the split's size plus one batch.
    """
    side = split_resolution(split_dir)
    if resolution is not None and side != resolution:
        raise TensorDataError(f"{split_dir}: images are {side} px, expected {resolution}")
    n = count_rows(split_dir, max_parts)
    image_ids: list[str] = []
    class_ids = np.empty(n, dtype=np.int64)
    pixels = np.empty((n, side, side), dtype=np.uint8)
    at = 0
    for ids, classes, px in iter_batches(split_dir, max_parts=max_parts):
        k = len(ids)
        image_ids.extend(ids)
        class_ids[at:at + k] = classes
        pixels[at:at + k] = px
        at += k
    return Split(image_ids, class_ids, pixels)
