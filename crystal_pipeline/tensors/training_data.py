"""Reading DESIGN.md's Parquet tensors for training, with pyarrow and numpy only.

Layout: ``<data_dir>/tensors/r<res>/<split>/part-*.parquet`` with columns
``image_id`` (string), ``class_id`` (1..10) and ``pixels`` (fixed-size binary of
res*res uint8, row-major), plus ``<data_dir>/tensors/r<res>/stats.npz`` (float32
``mean`` and ``std`` images). No pandas or DuckDB here: this path must run on a
bare GPU box that has only torch, numpy and pyarrow.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline.classes import NUM_CLASSES


class TensorDataError(ValueError):
    """The tensors on disk are missing or do not follow the contract."""


@dataclass
class Split:
    """One split in memory: uint8 images (N, res, res) and 0-based labels."""

    image_ids: list[str]
    labels: np.ndarray  # int64, class_id - 1
    pixels: np.ndarray  # uint8 (N, res, res)

    def __len__(self) -> int:
        return len(self.image_ids)


def resolve_tensors_dir(path: str | os.PathLike, resolution: int) -> Path:
    """Accept the data dir, its ``tensors`` folder, or the ``r<res>`` folder itself.

    The CLI's ``--tensors`` is forgiving because people point it at whichever of
    the three they have in their shell history.
    """
    root = Path(path)
    for candidate in (root, root / f"r{resolution}", root / "tensors" / f"r{resolution}"):
        if (candidate / "train").is_dir() and (candidate / "stats.npz").is_file():
            return candidate
    raise TensorDataError(
        f"no r{resolution} tensors under {root}: expected {root}/tensors/r{resolution}/"
        "{train,val}/part-*.parquet and stats.npz (is the resolution right?)"
    )


def split_files(tensors_dir: Path, split: str) -> list[Path]:
    return sorted((tensors_dir / split).glob("part-*.parquet"))


def read_split(tensors_dir: str | os.PathLike, split: str, resolution: int) -> Split:
    """All rows of one split, in file then row order (deterministic)."""
    tensors_dir = Path(tensors_dir)
    files = split_files(tensors_dir, split)
    if not files:
        raise TensorDataError(f"no part-*.parquet files in {tensors_dir / split}")
    size = resolution * resolution
    ids: list[str] = []
    labels: list[np.ndarray] = []
    pixels: list[np.ndarray] = []
    for file in files:
        try:
            table = pq.read_table(file, columns=["image_id", "class_id", "pixels"])
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise TensorDataError(f"{file}: cannot read tensors: {exc}") from exc
        ids.extend(str(v) for v in table.column("image_id").to_pylist())
        class_id = table.column("class_id").to_numpy().astype(np.int64)
        if class_id.size and (class_id.min() < 1 or class_id.max() > NUM_CLASSES):
            raise TensorDataError(f"{file}: class_id outside 1..{NUM_CLASSES}")
        labels.append(class_id - 1)
        pixels.append(_pixels_to_numpy(table.column("pixels"), size, file).reshape(-1, resolution, resolution))
    return Split(ids, np.concatenate(labels), np.concatenate(pixels))


def _pixels_to_numpy(column: pa.ChunkedArray, size: int, file: Path) -> np.ndarray:
    """Zero-copy view of a fixed_size_binary column's data buffer where possible."""
    if column.null_count:
        raise TensorDataError(f"{file}: {column.null_count} null pixel rows")
    parts = []
    for chunk in column.chunks:
        if pa.types.is_fixed_size_binary(chunk.type):
            if chunk.type.byte_width != size:
                raise TensorDataError(
                    f"{file}: pixels are {chunk.type.byte_width} bytes, resolution needs {size}"
                )
            buf = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
            parts.append(buf[chunk.offset * size : (chunk.offset + len(chunk)) * size])
        else:  # plain binary: slower, but accept it if every value has the right length
            values = chunk.to_pylist()
            if any(len(v) != size for v in values):
                raise TensorDataError(f"{file}: a pixels value is not {size} bytes")
            parts.append(np.frombuffer(b"".join(values), dtype=np.uint8))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def read_stats(tensors_dir: str | os.PathLike, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(tensors_dir) / "stats.npz"
    try:
        with np.load(path) as stats:
            mean, std = stats["mean"].astype(np.float32), stats["std"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise TensorDataError(f"{path}: cannot read mean/std: {exc}") from exc
    if mean.shape != (resolution, resolution) or std.shape != (resolution, resolution):
        raise TensorDataError(f"{path}: stats are {mean.shape}/{std.shape}, expected {resolution}x{resolution}")
    return mean, std


def file_digests(tensors_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file a model is trained on (both splits and the stats),
    keyed by path relative to the r<res> folder: the artifact's provenance."""
    tensors_dir = Path(tensors_dir)
    files = split_files(tensors_dir, "train") + split_files(tensors_dir, "val") + [tensors_dir / "stats.npz"]
    digests = {}
    for file in files:
        h = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digests[file.relative_to(tensors_dir).as_posix()] = h.hexdigest()
    return digests


def combined_digest(digests: dict[str, str]) -> str:
    """One sha256 over the sorted (path, digest) pairs: a short id for the data."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}\0{digests[name]}\n".encode())
    return h.hexdigest()


def write_split(tensors_dir: str | os.PathLike, split: str, image_ids, class_ids, pixels: np.ndarray,
                rows_per_file: int = 100_000) -> None:
    """Write a split in the contract's format. For tests and benchmarks; the
    pipeline's own writer lives with the tensor asset."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    n, h, w = pixels.shape
    out = Path(tensors_dir) / split
    out.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, n, rows_per_file)):
        stop = min(n, start + rows_per_file)
        flat = pa.py_buffer(pixels[start:stop].tobytes())
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(h * w), stop - start, [None, flat])
        table = pa.table({
            "image_id": pa.array([str(i) for i in image_ids[start:stop]], pa.string()),
            "class_id": pa.array(np.asarray(class_ids[start:stop], dtype=np.int16)),
            "pixels": column,
        })
        pq.write_table(table, out / f"part-{part:05d}.parquet")


def write_stats(tensors_dir: str | os.PathLike, pixels: np.ndarray) -> None:
    """Per-pixel mean and std of ``pixels`` in the contract's stats.npz."""
    data = np.asarray(pixels, dtype=np.float32)
    Path(tensors_dir).mkdir(parents=True, exist_ok=True)
    np.savez(Path(tensors_dir) / "stats.npz", mean=data.mean(0), std=data.std(0))
