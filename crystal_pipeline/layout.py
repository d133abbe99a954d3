"""Where everything lives: the one place that knows the data directory's layout.

One data directory (``CRYSTAL_DATA_DIR``, default ``./data``) holds the warehouse,
tensors, models and reports. The raw archive defaults to ``<data_dir>/raw``
(``CRYSTAL_RAW_DIR`` points it at a lab's real archive) and the folder the plate
sensor watches to ``<data_dir>/incoming`` (``CRYSTAL_INCOMING_DIR``). The Dagster
resources, the CLI and the tests all build their paths from here, so they agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DATA_DIR = "CRYSTAL_DATA_DIR"
ENV_RAW_DIR = "CRYSTAL_RAW_DIR"
ENV_INCOMING_DIR = "CRYSTAL_INCOMING_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA_DIR) or "data").resolve()


def default_raw_dir() -> Path:
    raw = os.environ.get(ENV_RAW_DIR)
    return Path(raw).resolve() if raw else default_data_dir() / "raw"


def default_incoming_dir() -> Path:
    incoming = os.environ.get(ENV_INCOMING_DIR)
    return Path(incoming).resolve() if incoming else default_data_dir() / "incoming"


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data directory, plus the raw and incoming folders."""

    data_dir: Path
    raw_dir: Path
    incoming_dir: Path

    @classmethod
    def from_env(cls) -> "DataLayout":
        return cls(default_data_dir(), default_raw_dir(), default_incoming_dir())

    @classmethod
    def under(cls, data_dir: str | os.PathLike) -> "DataLayout":
        """A self-contained layout (raw and incoming inside the data dir)."""
        root = Path(data_dir).resolve()
        return cls(root, root / "raw", root / "incoming")

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def tensors_dir(self, resolution: int) -> Path:
        return self.data_dir / "tensors" / f"r{resolution}"

    def tensors_split_dir(self, resolution: int, split: str) -> Path:
        return self.tensors_dir(resolution) / split

    def stats_path(self, resolution: int) -> Path:
        return self.tensors_dir(resolution) / "stats.npz"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def model_path(self, model_version: str) -> Path:
        return self.models_dir / model_version / "model.pt"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def evaluation_report_dir(self, model_version: str) -> Path:
        return self.reports_dir / "evaluation" / model_version

    def plate_report_dir(self, partition_key: str) -> Path:
        return self.reports_dir / "plates" / partition_key

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"
