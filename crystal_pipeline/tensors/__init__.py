"""The preprocessed tensors: Parquet files of 8-bit squares that training reads with pyarrow.

One format, one home, one module per job:

- :mod:`.schema`: the layout, column schema and split names (DESIGN.md, "Tensors (Parquet)").
- :mod:`.writer`: :func:`write_tensors` (decode archive images, stream, replace splits
  atomically) and :func:`write_split` (the same writer for arrays in memory).
- :mod:`.reader`: THE reader; class ids are the paper's 1..10 everywhere.
- :mod:`.stats`: the training split's per-pixel mean and std (``stats.npz``).
- :mod:`.fingerprint`: the one content fingerprint, recorded by the prepare assets, the
  feature cache and every trained model.
- :mod:`.preparation`: from the warehouse's labels to tensors at a resolution (imports
  the warehouse, so it is not re-exported here: reading tensors needs no DuckDB).

Everything public is re-exported, so ``from crystal_pipeline import tensors;
tensors.read_split(...)`` is the usual spelling.
"""

from crystal_pipeline.tensors.fingerprint import fingerprint, fingerprint_splits
from crystal_pipeline.tensors.reader import (
    Split,
    count_rows,
    iter_batches,
    part_files,
    pixel_width,
    read_split,
    resolve_tensors_dir,
    split_crop,
    split_has_uv,
    split_resolution,
)
from crystal_pipeline.tensors.schema import (
    PART_GLOB,
    ROW_GROUP_ROWS,
    SPLITS,
    STATS_FILE,
    UV_COLUMN,
    TensorDataError,
    tensor_schema,
)
from crystal_pipeline.tensors.stats import STD_FLOOR, compute_stats, load_channel_stats, load_stats, save_stats
from crystal_pipeline.tensors.writer import DecodeFailure, TensorWriteSummary, write_split, write_tensors

__all__ = [
    "PART_GLOB", "ROW_GROUP_ROWS", "SPLITS", "STATS_FILE", "STD_FLOOR", "DecodeFailure", "Split",
    "TensorDataError", "TensorWriteSummary", "UV_COLUMN", "compute_stats", "count_rows", "fingerprint", "fingerprint_splits",
    "iter_batches", "load_channel_stats", "load_stats", "part_files", "pixel_width", "read_split", "resolve_tensors_dir", "save_stats",
    "split_crop", "split_has_uv", "split_resolution", "tensor_schema", "write_split", "write_tensors",
]
