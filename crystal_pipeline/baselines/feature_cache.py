"""Engineered features of a tensor split, computed once per content and kept as Parquet.

The key is the tensors' content fingerprint (:func:`crystal_pipeline.tensors.fingerprint`)
plus :data:`~crystal_pipeline.baselines.features.FEATURE_VERSION`, so new tensors or a
changed extractor miss the cache and anything else hits it, whatever the path or mtime.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crystal_pipeline.baselines.features import FEATURE_NAMES, FEATURE_VERSION, extract_features
from crystal_pipeline.files import atomic_write
from crystal_pipeline.tensors import fingerprint as tensors_fingerprint
from crystal_pipeline.tensors import read_split


@dataclass
class FeatureTable:
    """Features of one split, row-aligned with its tensors.

    ``seconds`` is the time the extraction took (when read from the cache, the time
    recorded by the run that extracted it) and ``ms_per_image`` the cost per image, both
    reported apart from prediction time as in the paper's footnote; ``pixels`` are the
    split's images, kept because the kNN baseline reads pixels and reading the split twice
    would cost more than holding it. ``class_ids`` are the paper's ids 1..10.
    """

    image_ids: list[str]
    class_ids: np.ndarray
    features: np.ndarray
    names: tuple[str, ...]
    pixels: np.ndarray
    from_cache: bool
    seconds: float
    path: Path

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(1, len(self.image_ids))


def cache_path(cache_dir: str | os.PathLike, fingerprint: str, split: str) -> Path:
    return Path(cache_dir) / f"features-{FEATURE_VERSION}-{split}-{fingerprint[:24]}.parquet"


def _write(path: Path, image_ids, class_ids, features: np.ndarray, seconds: float) -> None:
    columns = {"image_id": pa.array(image_ids, pa.string()),
               "class_id": pa.array(np.asarray(class_ids, dtype=np.int16))}
    for j, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(features[:, j], pa.float32())
    table = pa.table(columns).replace_schema_metadata(
        {b"feature_version": FEATURE_VERSION.encode(), b"extract_seconds": f"{seconds:.6f}".encode()})
    atomic_write(path, functools.partial(pq.write_table, table, compression="zstd"))


def _read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    table = pq.read_table(path)
    seconds = float((table.schema.metadata or {}).get(b"extract_seconds", b"nan"))
    if tuple(table.column_names[2:]) != FEATURE_NAMES:
        raise ValueError(f"{path}: feature columns differ from this version's")
    features = np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float32)
    return (table.column("image_id").to_pylist(),
            table.column("class_id").to_numpy().astype(np.int64), features, seconds)


def extract_features_cached(split_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                            fingerprint: str | None = None, workers: int = 1) -> FeatureTable:
    """Features of the split at ``split_dir``, read from ``cache_dir`` when already extracted.

    ``fingerprint`` is the split's tensor fingerprint; pass the one the tensors asset
    recorded to skip rehashing, or None to compute it. A cache file that cannot be read
    (truncated, older layout) is recomputed and replaced, never trusted.
    """
    split_dir = Path(split_dir)
    if fingerprint is None:
        fingerprint = tensors_fingerprint(split_dir)
    path = cache_path(cache_dir, fingerprint, split_dir.name)
    split = read_split(split_dir)
    image_ids, class_ids, pixels = split.image_ids, split.class_ids, split.pixels
    if path.exists():
        try:
            cached_ids, _, features, seconds = _read(path)
        except Exception:  # a damaged cache is a miss, not an error
            cached_ids = None
        if cached_ids == image_ids:
            return FeatureTable(image_ids, class_ids, features, FEATURE_NAMES, pixels,
                                from_cache=True, seconds=seconds, path=path)
    started = time.perf_counter()
    features = extract_features(pixels, workers=workers)
    seconds = time.perf_counter() - started
    _write(path, image_ids, class_ids, features, seconds)
    return FeatureTable(image_ids, class_ids, features, FEATURE_NAMES, pixels,
                        from_cache=False, seconds=seconds, path=path)
