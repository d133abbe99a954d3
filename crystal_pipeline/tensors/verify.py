"""What the prepare checks verify on disk: the tensor files as written, the stats as saved.

The Parquet schema fixes ``pixels`` at resolution^2 bytes, so reading the schema back
proves nothing; these functions read every part file's rows (a truncated or foreign
file fails here) and the saved ``stats.npz`` (before anyone trusts it). Pure pyarrow
and numpy, no Dagster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crystal_pipeline.tensors.schema import PART_GLOB

# A pixel whose spread over the training split is below one grey level is constant in
# practice (a masked corner); most of the image constant means the split is unusable
# (identical images, a broken decoder).
MAX_FLOORED_SHARE = 0.5


@dataclass
class SplitFiles:
    """One split's part files as read back: rows per file, and what was wrong."""

    files: int = 0
    rows: int = 0
    footer_rows: int = 0
    bad_lengths: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows == self.footer_rows


def read_back_split(split_dir: str | os.PathLike, resolution: int) -> SplitFiles:
    """Read every row of a split's part files and count ``pixels`` values that are not
    ``resolution**2`` bytes; an unreadable file is a problem, not an exception."""
    out = SplitFiles()
    width = resolution * resolution
    for part in sorted(Path(split_dir).glob(PART_GLOB)):
        out.files += 1
        try:
            handle = pq.ParquetFile(part)
            out.footer_rows += handle.metadata.num_rows
            table = handle.read(columns=["image_id", "pixels"])
        except Exception as error:  # pyarrow raises several types for a damaged file
            out.problems.append(f"{part.name}: unreadable ({error})")
            continue
        lengths = np.asarray(pc.binary_length(table.column("pixels")), dtype=np.int64)
        out.rows += table.num_rows
        wrong = int((lengths != width).sum())
        out.bad_lengths += wrong
        if wrong:
            out.problems.append(f"{part.name}: {wrong} pixels values are not {width} bytes")
    return out


@dataclass(frozen=True)
class StatsReport:
    shape: tuple
    finite: bool
    min_std: float
    floored_share: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_stats(mean: np.ndarray, std: np.ndarray, resolution: int, floor: float) -> StatsReport:
    """Whether saved per-pixel stats can standardize images: the right shape, finite,
    ``std`` at or above ``floor`` everywhere, and at most :data:`MAX_FLOORED_SHARE` of
    the pixels at the floor (there the raw spread was below it, i.e. the pixel never
    varied across the training split)."""
    problems = []
    shape = tuple(np.shape(mean))
    if shape != (resolution, resolution) or np.shape(std) != shape:
        problems.append(f"mean {shape} / std {np.shape(std)} are not ({resolution}, {resolution})")
    finite = bool(np.isfinite(mean).all() and np.isfinite(std).all())
    if not finite:
        problems.append("non-finite values")
    std = np.asarray(std, dtype=np.float64)
    min_std = float(np.nanmin(std)) if std.size else float("nan")
    if std.size and not min_std >= floor:
        problems.append(f"std {min_std} below the floor {floor}")
    floored = float((std <= floor).mean()) if std.size else 1.0
    if floored > MAX_FLOORED_SHARE:
        problems.append(f"{100 * floored:.0f}% of pixels never vary across the training split")
    return StatsReport(shape, finite, min_std, floored, tuple(problems))
