"""The Parquet tensor format itself: file layout, column schema and split names.

Layout (DESIGN.md, "Tensors (Parquet)"): ``<data_dir>/tensors/r<res>/<split>/part-NNNNN.parquet``
with columns ``image_id`` (string), ``class_id`` (int16, the paper's class ids 1..10,
non-null: labelled images only) and ``pixels`` (``fixed_size_binary(res*res)``, row-major
uint8; an archive with UV pictures adds ``uv_pixels``, :data:`UV_COLUMN`), plus
``r<res>/stats.npz`` with the training split's per-pixel float32 ``mean`` and ``std`` (and
``uv_mean``, ``uv_std`` beside a UV column). Every other module of this package (writer,
reader, stats, fingerprint) takes
these names from here, so the format is defined once.
"""

from __future__ import annotations

import os

import pyarrow as pa

from crystal_pipeline.classes import NUM_CLASSES
from crystal_pipeline.ingest.imaging import DEFAULT_CROP, check_crop

#: Part files of one split, in the order they are read (sorted by name).
PART_GLOB = "part-*.parquet"
#: The per-pixel statistics beside the splits of one resolution.
STATS_FILE = "stats.npz"
#: The splits the pipeline writes: training reads ``train`` (and ``val`` for its history),
#: ``val`` tunes and promotes, ``test`` only reports (DESIGN.md "Split").
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Rows per Parquet row group: bounds the writer's buffer (4 MiB per split at 128 px; 1024
#: rows measured ~80 MB more peak RSS) and is the unit a streaming reader holds at once.
ROW_GROUP_ROWS = 256
#: Valid ``class_id`` values (the paper's ids; a model's output index is ``class_id - 1``).
MIN_CLASS_ID, MAX_CLASS_ID = 1, NUM_CLASSES


class TensorDataError(ValueError):
    """The tensors on disk are missing or do not follow the format; the message names the file."""


#: The UV picture of each row's drop (issue 20), a second pixel column of the same width,
#: present only in tensors written from an archive with UV pictures; visible-only tensors
#: keep exactly the three columns above (and their fingerprint).
UV_COLUMN = "uv_pixels"


def tensor_schema(resolution: int, crop: str = DEFAULT_CROP, *, uv: bool = False) -> pa.Schema:
    """The fixed Parquet schema; the resolution and the crop (``preprocessing.crop``: which
    square of each picture the pixels are) also travel as schema metadata. ``uv`` adds
    :data:`UV_COLUMN` after ``pixels``."""
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("class_id", pa.int16(), nullable=False),
        pa.field("pixels", pa.binary(resolution * resolution), nullable=False),
    ]
    if uv:
        fields.append(pa.field(UV_COLUMN, pa.binary(resolution * resolution), nullable=False))
    return pa.schema(fields, metadata={b"resolution": str(resolution).encode(), b"crop": check_crop(crop).encode()})


def check_split_name(split: str) -> str:
    """``split`` if it can name a folder beside the others (no path, not hidden), else ValueError."""
    if not split or split.startswith(".") or "/" in split or os.sep in split:
        raise ValueError(f"invalid split name {split!r}")
    return split
