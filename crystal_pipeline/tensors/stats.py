"""The training split's per-pixel mean and std (``stats.npz``): computed, saved and read here only.

Training standardizes every image with these before contrast normalization, and the
trained artifact carries them, so training and inference use the same numbers.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from crystal_pipeline.files import atomic_write
from crystal_pipeline.tensors.reader import iter_batches, split_resolution
from crystal_pipeline.tensors.schema import TensorDataError

#: Pixel std (in 0..255 grey levels) below which a pixel counts as constant. Normalising by
#: a smaller std would blow quantisation noise up into huge inputs (and 0 would divide by
#: zero), so :func:`compute_stats` floors std here: one grey level, the 8-bit resolution.
STD_FLOOR = 1.0


def compute_stats(split_dir: str | os.PathLike, batch_rows: int = 256,
                  std_floor: float = STD_FLOOR, *, uv: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and std (population, 0..255 units) of a split, streamed.

    Sums of x and x^2 are accumulated exactly in int64 (255^2 fits uint16, so the square
    needs no float), which avoids the cancellation of float running sums; std is floored
    at ``std_floor`` (see :data:`STD_FLOOR`). Returns float32 ``(res, res)`` images.
    ``uv``: the same of the split's UV column (tensors written with UV).
    """
    side = split_resolution(split_dir)
    total = np.zeros((side, side), dtype=np.int64)
    total_sq = np.zeros((side, side), dtype=np.int64)
    n = 0
    for _, _, visible, uv_px in iter_batches(split_dir, batch_rows, with_uv=True):
        px = uv_px if uv else visible
        if px is None:
            raise TensorDataError(f"{split_dir}: no UV column to compute UV statistics from")
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


def save_stats(path: str | os.PathLike, mean: np.ndarray, std: np.ndarray,
               uv: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write ``stats.npz`` (float32 ``mean`` and ``std``) atomically (:func:`crystal_pipeline.files.atomic_write`);
    ``uv``, the UV column's ``(mean, std)``, adds ``uv_mean`` and ``uv_std``."""
    arrays = {"mean": np.asarray(mean, dtype=np.float32), "std": np.asarray(std, dtype=np.float32)}
    if uv is not None:
        arrays.update(uv_mean=np.asarray(uv[0], dtype=np.float32), uv_std=np.asarray(uv[1], dtype=np.float32))
    if len({a.shape for a in arrays.values()}) != 1:
        raise ValueError(f"stats differ in shape: {({k: a.shape for k, a in arrays.items()})}")
    atomic_write(path, functools.partial(np.savez, **arrays))


def load_stats(path: str | os.PathLike, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 images from :func:`save_stats`; ``resolution``, when given,
    must be their side. A missing or malformed file is a :class:`TensorDataError`."""
    try:
        with np.load(path) as z:
            mean, std = z["mean"].astype(np.float32), z["std"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise TensorDataError(f"{path}: cannot read mean/std: {exc}") from exc
    expected = mean.shape if resolution is None else (resolution, resolution)
    if mean.shape != expected or std.shape != expected or mean.ndim != 2:
        raise TensorDataError(f"{path}: stats are {mean.shape}/{std.shape}, expected {expected}")
    return mean, std


def load_channel_stats(path: str | os.PathLike, resolution: int, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """What a model of ``in_channels`` normalizes with: :func:`load_stats` for 1, and for 2
    (visible + UV, ``model.fusion``) the visible and UV stats stacked as ``(2, res, res)``."""
    mean, std = load_stats(path, resolution)
    if in_channels == 1:
        return mean, std
    try:
        with np.load(path) as z:
            uv_mean, uv_std = z["uv_mean"].astype(np.float32), z["uv_std"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise TensorDataError(f"{path}: no UV statistics for a {in_channels}-channel model: {exc}") from exc
    if in_channels != 2 or uv_mean.shape != mean.shape or uv_std.shape != std.shape:
        raise TensorDataError(f"{path}: cannot give {in_channels}-channel stats from {mean.shape} images")
    return np.stack([mean, uv_mean]), np.stack([std, uv_std])
