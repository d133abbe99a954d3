"""THE reader of the Parquet tensors, with pyarrow and numpy only (it runs on a bare GPU box).

Every consumer (training, the studies, baselines, the assets' checks and previews, the
benchmarks) reads through here, so there is one label convention: ``class_ids`` are the
paper's ids 1..10, exactly as stored. Only the training loss works with 0-based indices,
and it subtracts 1 where it builds its targets.

Guarantees: rows come in part-file then row order (deterministic); every part is checked
against the format (pixel width, no null pixels, class ids in 1..10) and a violation is a
:class:`TensorDataError` naming the file; a whole split is read into arrays allocated once
at their final size, so the peak is the split plus one batch.

One generation: a writer replaces a split by renaming a new folder over it, possibly
while a reader reads (another training run, a study). :func:`read_split` and
:func:`iter_batches` therefore open every part file of one listing, relative to one
open handle of the folder, before reading a row, and check that the path still names
that folder afterwards; open files survive their deletion. They read exactly one
written generation, or, when the folder keeps being replaced, fail with a
:class:`TensorDataError` that says so: never a mix, never uninitialised rows.
"""

from __future__ import annotations

import fnmatch
import math
import mmap
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline.ingest.imaging import DEFAULT_CROP
from crystal_pipeline.tensors.schema import (
    MAX_CLASS_ID,
    MIN_CLASS_ID,
    PART_GLOB,
    STATS_FILE,
    UV_COLUMN,
    TensorDataError,
)


@dataclass
class Split:
    """One split in memory: ids, class ids 1..10 (int64, N) and uint8 images (N, res, res);
    ``uv``, the drops' UV pictures (N, res, res), when the tensors have a UV column."""

    image_ids: list[str]
    class_ids: np.ndarray
    pixels: np.ndarray
    crop: str = DEFAULT_CROP  # which square of each picture (``preprocessing.crop``)
    uv: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        """1 for visible-only tensors, 2 with UV (a fused model's input)."""
        return 1 if self.uv is None else 2

    def channels(self) -> np.ndarray:
        """What a model of :attr:`in_channels` reads: the (N, res, res) pixels, or visible and
        UV stacked as (N, 2, res, res) (``model.fusion.stack_pictures``)."""
        if self.uv is None:
            return self.pixels
        from crystal_pipeline.model.fusion import stack_pictures

        return stack_pictures(self.pixels, self.uv)

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


def _schema_width(part: Path, schema: pa.Schema) -> int:
    """Bytes per ``pixels`` value of a part file's schema."""
    try:
        pixels = schema.field("pixels").type
    except KeyError as exc:
        raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc
    if not pa.types.is_fixed_size_binary(pixels):
        raise TensorDataError(f"{part}: pixels are {pixels}, expected fixed_size_binary")
    return pixels.byte_width


def _pixel_width(part: Path) -> int:
    try:
        schema = pq.read_schema(part)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc
    return _schema_width(part, schema)


def split_resolution(split_dir: str | os.PathLike) -> int:
    """The square side of a split's images, from its schema."""
    part = _parts(split_dir)[0]
    width = _pixel_width(part)
    side = math.isqrt(width)
    if side * side != width:
        raise TensorDataError(f"{part}: pixels of {width} bytes are not a square image")
    return side


def _schema_crop(schema: pa.Schema) -> str:
    """The crop a part file's schema records; files written before the setting: the centre."""
    return (schema.metadata or {}).get(b"crop", DEFAULT_CROP.encode()).decode()


def split_crop(split_dir: str | os.PathLike) -> str:
    """The crop of a split's images (``centre`` or ``drop``), from its first part's schema."""
    part = _parts(split_dir)[0]
    try:
        return _schema_crop(pq.read_schema(part))
    except (pa.ArrowInvalid, OSError) as exc:
        raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc


def split_has_uv(split_dir: str | os.PathLike) -> bool:
    """Whether a split's tensors carry the UV column (read from its first part's schema)."""
    part = _parts(split_dir)[0]
    try:
        return UV_COLUMN in pq.read_schema(part).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc


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


#: Tries at one consistent listing before giving up; each waits a little longer for the
#: writer (whose commit, where the system cannot exchange folders, is two renames apart).
_GENERATION_ATTEMPTS = 5


class _MappedPart(pq.ParquetFile):
    """A part file read through its memory mapping, which it keeps to hand pages back."""

    mapping: mmap.mmap

    def release_pages(self) -> None:
        """Drop the mapping's pages from this process's memory once the part has been read.

        Every part of a generation stays mapped until the split is read through (so a writer
        replacing the folder meanwhile cannot mix generations), and each page read stays
        resident: a streamed pass over the train split (the stats) grew the peak RSS with the
        split's file size (file pages 42 -> 236 MiB over 13,350 images at 128 px). The pages are
        file-backed and read-only, so a later touch (an Arrow view into them) faults them
        in again from the same file; nothing read is lost."""
        try:
            self.mapping.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):  # no madvise here, or the mapping is closed
            pass


def _map_part(dir_fd: int, path: Path) -> _MappedPart:
    """One part file, opened relative to its folder's handle and memory-mapped (faster than
    a Python file object; the mapping outlives a later unlink of the file)."""
    fd = os.open(path.name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except ValueError as exc:  # an empty file cannot be mapped
        raise TensorDataError(f"{path}: cannot read tensors: empty file") from exc
    finally:
        os.close(fd)
    try:
        part = _MappedPart(pa.BufferReader(pa.py_buffer(mapped)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise TensorDataError(f"{path}: cannot read tensors: {exc}") from exc
    part.mapping = mapped
    return part


def _try_generation(split_dir: Path, max_parts: int | None) -> list[tuple[Path, _MappedPart]] | None:
    """The parts of the folder ``split_dir`` names now, all opened; None if it was replaced
    meanwhile (the listing may then be of a folder being deleted)."""
    dir_fd = os.open(split_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted(n for n in os.listdir(dir_fd) if fnmatch.fnmatchcase(n, PART_GLOB))[:max_parts]
        opened = [(split_dir / name, _map_part(dir_fd, split_dir / name)) for name in names]
        now, held = os.stat(split_dir), os.fstat(dir_fd)
        return opened if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) else None
    finally:
        os.close(dir_fd)


def _open_generation(split_dir: str | os.PathLike, max_parts: int | None) -> list[tuple[Path, _MappedPart]]:
    """Every part file (the first ``max_parts``) of one written generation of a split, open."""
    split_dir = Path(split_dir)
    for attempt in range(_GENERATION_ATTEMPTS):
        time.sleep(0.005 * attempt * attempt)
        try:
            parts = _try_generation(split_dir, max_parts)
        except (FileNotFoundError, NotADirectoryError):
            continue  # the folder is between its two renames, or a part was deleted under us
        if parts is not None:
            if not parts:
                raise TensorDataError(f"no {PART_GLOB} files in {split_dir}")
            return parts
    if not split_dir.is_dir():
        raise TensorDataError(f"no {PART_GLOB} files in {split_dir} (no such folder)")
    raise TensorDataError(f"{split_dir} was replaced by a tensor writer {_GENERATION_ATTEMPTS} times while "
                          "being opened; read it again once the writer is done")


def _generation_side(parts: list[tuple[Path, _MappedPart]]) -> int:
    """The square side of one generation's images; every part must agree with the first."""
    widths = [_schema_width(path, pf.schema_arrow) for path, pf in parts]
    side = math.isqrt(widths[0])
    if side * side != widths[0]:
        raise TensorDataError(f"{parts[0][0]}: pixels of {widths[0]} bytes are not a square image")
    for (path, _), width in zip(parts, widths):
        if width != side * side:
            raise TensorDataError(f"{path}: pixels are not {side}x{side} like the split's first part")
    return side


def _generation_has_uv(parts: list[tuple[Path, _MappedPart]]) -> bool:
    """Whether one generation's parts carry the UV column (all of them, or none)."""
    has = [UV_COLUMN in pf.schema_arrow.names for _, pf in parts]
    if any(has) and not all(has):
        raise TensorDataError(f"{parts[has.index(not has[0])][0]}: the split's parts disagree on {UV_COLUMN}")
    return has[0]


def _batches(parts: list[tuple[Path, _MappedPart]], side: int, batch_rows: int
             ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(ids, class ids, pixels, uv pixels or None)`` per batch."""
    for part, pf in parts:
        try:
            has_uv = UV_COLUMN in pf.schema_arrow.names
            for batch in pf.iter_batches(batch_size=batch_rows):
                if batch.num_rows == 0:
                    continue
                class_ids = batch.column("class_id").to_numpy().astype(np.int64)
                pixels = batch.column("pixels")
                _check_batch(part, class_ids, pixels)
                uv = None
                if has_uv:
                    uv_column = batch.column(UV_COLUMN)
                    _check_batch(part, class_ids, uv_column)
                    uv = _pixels_view(uv_column, side)
                yield batch.column("image_id").to_pylist(), class_ids, _pixels_view(pixels, side), uv
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise TensorDataError(f"{part}: cannot read tensors: {exc}") from exc
        pf.release_pages()  # read through: its pages need not stay resident


def iter_batches(split_dir: str | os.PathLike, batch_rows: int = 1024, max_parts: int | None = None, *,
                 with_uv: bool = False) -> Iterator[tuple]:
    """Stream a split (its first ``max_parts`` part files; None: all) as
    ``(image_ids, class_ids int64 1..10, pixels uint8 (n, res, res))``, all of one generation;
    ``with_uv`` adds a fourth item, the UV pixels (None for visible-only tensors).

    The pixel arrays are read-only views into Arrow memory; copy one to keep or modify it.
    """
    parts = _open_generation(split_dir, max_parts)
    _generation_has_uv(parts)
    for ids, classes, px, uv in _batches(parts, _generation_side(parts), batch_rows):
        yield (ids, classes, px, uv) if with_uv else (ids, classes, px)


def read_split(split_dir: str | os.PathLike, resolution: int | None = None, *,
               max_parts: int | None = None) -> Split:
    """A whole split in memory (see :class:`Split`), of one generation; ``resolution``, when
    given, must match. ``max_parts`` reads only the first part files (a preview needs no more).

    The pixel array is allocated once at its final size (no concatenation copy), so the
    peak is the split's size plus one batch. Its size comes from the footers of the very
    files read, so every row is filled.
    """
    parts = _open_generation(split_dir, max_parts)
    side = _generation_side(parts)
    if resolution is not None and side != resolution:
        raise TensorDataError(f"{split_dir}: images are {side} px, expected {resolution}")
    n = sum(pf.metadata.num_rows for _, pf in parts)
    image_ids: list[str] = []
    class_ids = np.empty(n, dtype=np.int64)
    pixels = np.empty((n, side, side), dtype=np.uint8)
    uv_pixels = np.empty((n, side, side), dtype=np.uint8) if _generation_has_uv(parts) else None
    at = 0
    for ids, classes, px, uv in _batches(parts, side, 1024):
        k = len(ids)
        if at + k > n:
            raise TensorDataError(f"{split_dir}: more rows than the footers of its part files say")
        image_ids.extend(ids)
        class_ids[at:at + k] = classes
        pixels[at:at + k] = px
        if uv_pixels is not None:
            uv_pixels[at:at + k] = uv
        at += k
    if at != n:
        raise TensorDataError(f"{split_dir}: {at} rows read, its part files' footers say {n}")
    return Split(image_ids, class_ids, pixels, _schema_crop(parts[0][1].schema_arrow), uv_pixels)
