"""Where everything lives: the one place that knows the data directory's layout.

One data directory (``CRYSTAL_DATA_DIR``, default ``./data``) holds the warehouse,
tensors, models and reports. The raw archive defaults to ``<data_dir>/raw``
(``CRYSTAL_RAW_DIR`` points it at a lab's real archive) and the folder the plate
sensor watches to ``<data_dir>/incoming`` (``CRYSTAL_INCOMING_DIR``). The Dagster
resources, the CLI and the tests all build their paths from here, so they agree.

The warehouse is ``<data_dir>/warehouse.duckdb`` unless ``CRYSTAL_WAREHOUSE=ducklake``
puts it in a DuckLake: catalog at ``CRYSTAL_WAREHOUSE_URL`` (default: the instance's
Postgres, ``CRYSTAL_POSTGRES_URL`` or ``make serve``'s own server) and Parquet files
under ``CRYSTAL_LAKE_DATA_PATH`` (default ``<data_dir>/lake``; shared storage when
workers run on several machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_DATA_DIR = "CRYSTAL_DATA_DIR"
ENV_RAW_DIR = "CRYSTAL_RAW_DIR"
ENV_INCOMING_DIR = "CRYSTAL_INCOMING_DIR"
ENV_FILENAME_PATTERN = "CRYSTAL_FILENAME_PATTERN"
ENV_PLATE_SETTLE_MINUTES = "CRYSTAL_PLATE_SETTLE_MINUTES"
DEFAULT_PLATE_SETTLE_MINUTES = 30.0
ENV_WAREHOUSE = "CRYSTAL_WAREHOUSE"
ENV_WAREHOUSE_URL = "CRYSTAL_WAREHOUSE_URL"
ENV_LAKE_DATA_PATH = "CRYSTAL_LAKE_DATA_PATH"
ENV_POSTGRES_URL = "CRYSTAL_POSTGRES_URL"
# Plate runs as Kubernetes pods (crystal_pipeline/service/k8s_pod.py): the data volume's claim
# turns them on; the Secret holds the lake catalog URL; the node selector picks CPU nodes.
ENV_K8S_DATA_CLAIM = "CRYSTAL_K8S_DATA_CLAIM"
ENV_K8S_CATALOG_SECRET = "CRYSTAL_K8S_CATALOG_SECRET"
ENV_K8S_NODE_SELECTOR = "CRYSTAL_K8S_NODE_SELECTOR"
WAREHOUSE_BACKENDS = ("file", "ducklake")


def default_warehouse_backend() -> str:
    """``file`` (one DuckDB file, the default) or ``ducklake`` (``CRYSTAL_WAREHOUSE``)."""
    backend = (os.environ.get(ENV_WAREHOUSE) or "file").strip().lower()
    if backend not in WAREHOUSE_BACKENDS:
        raise ValueError(f"{ENV_WAREHOUSE}={backend!r}: use one of {', '.join(WAREHOUSE_BACKENDS)}")
    return backend


def default_warehouse_url() -> str | None:
    """The lake's catalog: ``CRYSTAL_WAREHOUSE_URL``, else the instance's ``CRYSTAL_POSTGRES_URL``,
    else None (then the embedded server of ``make serve`` under the data dir)."""
    return os.environ.get(ENV_WAREHOUSE_URL) or os.environ.get(ENV_POSTGRES_URL) or None


def default_lake_data_path() -> Path | None:
    path = os.environ.get(ENV_LAKE_DATA_PATH)
    return Path(path).resolve() if path else None


def plate_settle_minutes() -> float:
    """How long a plate folder with neither ``plate.json`` nor a completion marker must stay
    unchanged before the sensor labels it as it is (``CRYSTAL_PLATE_SETTLE_MINUTES``, default 30)."""
    text = os.environ.get(ENV_PLATE_SETTLE_MINUTES)
    if not text:
        return DEFAULT_PLATE_SETTLE_MINUTES
    try:
        minutes = float(text)
    except ValueError:
        raise ValueError(f"{ENV_PLATE_SETTLE_MINUTES}={text!r} is not a number of minutes") from None
    if minutes < 0:
        raise ValueError(f"{ENV_PLATE_SETTLE_MINUTES}={text!r} is negative")
    return minutes


def default_filename_pattern() -> str | None:
    """The lab's file naming (a preset name or a regular expression), None for the default."""
    return os.environ.get(ENV_FILENAME_PATTERN) or None


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA_DIR) or "data").resolve()


def default_raw_dir() -> Path:
    raw = os.environ.get(ENV_RAW_DIR)
    return Path(raw).resolve() if raw else DataLayout.raw_dir_under(default_data_dir())


def default_incoming_dir() -> Path:
    incoming = os.environ.get(ENV_INCOMING_DIR)
    return Path(incoming).resolve() if incoming else DataLayout.incoming_dir_under(default_data_dir())


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data directory, plus the raw and incoming folders."""

    data_dir: Path
    raw_dir: Path
    incoming_dir: Path
    # How imager file names read (``CRYSTAL_FILENAME_PATTERN``; crystal_pipeline.ingest.naming).
    filename_pattern: str | None = field(default_factory=default_filename_pattern)
    # Which warehouse (file or ducklake), the lake's catalog and its data path (module docstring).
    warehouse_backend: str = field(default_factory=default_warehouse_backend)
    warehouse_url: str | None = field(default_factory=default_warehouse_url)
    lake_data_path: Path | None = field(default_factory=default_lake_data_path)

    @classmethod
    def from_env(cls) -> "DataLayout":
        return cls(default_data_dir(), default_raw_dir(), default_incoming_dir())

    @classmethod
    def under(cls, data_dir: str | os.PathLike) -> "DataLayout":
        """A self-contained layout (raw and incoming inside the data dir)."""
        root = Path(data_dir).resolve()
        return cls(root, cls.raw_dir_under(root), cls.incoming_dir_under(root))

    @property
    def naming(self):
        """The :class:`~crystal_pipeline.ingest.naming.FileNaming` every entry point reads file names
        with; a bad ``CRYSTAL_FILENAME_PATTERN`` raises ValueError here, before any file is read."""
        from crystal_pipeline.ingest.naming import FileNaming

        return FileNaming.from_setting(self.filename_pattern)

    @staticmethod
    def raw_dir_under(data_dir: Path) -> Path:
        return Path(data_dir) / "raw"

    @staticmethod
    def incoming_dir_under(data_dir: Path) -> Path:
        return Path(data_dir) / "incoming"

    @property
    def warehouse(self) -> Path:
        """The DuckDB file of the file backend (and what ``warehouse migrate`` copies to or from)."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def lake_data_dir(self) -> Path:
        """Where the lake backend's Parquet files go."""
        return self.lake_data_path or self.data_dir / "lake"

    def tensors_dir(self, resolution: int) -> Path:
        return self.data_dir / "tensors" / f"r{resolution}"

    def tensors_split_dir(self, resolution: int, split: str) -> Path:
        return self.tensors_dir(resolution) / split

    def stats_path(self, resolution: int) -> Path:
        return self.tensors_dir(resolution) / "stats.npz"

    def tensors_lock(self, resolution: int) -> Path:
        """What the tensor writers of one resolution lock (``crystal_pipeline.locks``)."""
        return self.tensors_lock_in(self.tensors_dir(resolution))

    @staticmethod
    def tensors_lock_in(tensors_dir: str | os.PathLike) -> Path:
        """The lock file of a tensors folder the writer was handed directly (studies, tests):
        beside it (``tensors/.r64.lock``), so the folder holds only splits and stats."""
        folder = Path(tensors_dir).absolute()
        return folder.parent / f".{folder.name}.lock"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def model_path(self, model_version: str) -> Path:
        return self.models_dir / model_version / "model.pt"

    @property
    def training_dir(self) -> Path:
        """Staging folders of training runs, before a model gets its version."""
        return self.models_dir / "_training"

    def training_identity_dir(self, identity_key: str) -> Path:
        """The runs of one training config (``TrainConfig.identity_key()``): a resume looks here."""
        return self.training_dir / identity_key

    def training_run_dir(self, identity_key: str, run_id: str) -> Path:
        """One run's own staging folder: its ``model.pt``, checkpoint and lock."""
        return self.training_identity_dir(identity_key) / run_id

    def baselines_path(self, resolution: int) -> Path:
        """The fitted RF, MLP and kNN baselines at one resolution (a pickle)."""
        return self.models_dir / "baselines" / f"baselines_r{resolution}.pkl"

    @property
    def feature_cache_dir(self) -> Path:
        """Hand-crafted baseline features per tensor file (recomputable)."""
        return self.data_dir / "cache" / "features"

    def study_dir(self, study: str) -> Path:
        """Working folder of one paper study (``training_size``, ``resolution``)."""
        return self.data_dir / "studies" / study

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def evaluation_report_dir(self, model_version: str) -> Path:
        return self.reports_dir / "evaluation" / model_version

    def evaluation_report_html(self, model_version: str) -> Path:
        return self.evaluation_report_dir(model_version) / "report.html"

    @property
    def plate_reports_dir(self) -> Path:
        return self.reports_dir / "plates"

    def plate_report_dir(self, partition_key: str) -> Path:
        """``reports/plates/<key>``; ValueError when the key would resolve anywhere else (``..``,
        ``a/b``, an absolute path): a report never leaves its folder, whatever the key says."""
        parent = self.plate_reports_dir.resolve()
        folder = (parent / partition_key).resolve()
        if folder.parent != parent:
            raise ValueError(f"plate key {partition_key!r} does not name a folder directly under {parent}")
        return folder

    def plate_report_html(self, partition_key: str) -> Path:
        return self.plate_report_dir(partition_key) / "report.html"

    def plate_hits_csv(self, partition_key: str) -> Path:
        """The plate's ranked hit list (a public output: crystallographers open it)."""
        return self.plate_report_dir(partition_key) / "hits.csv"

    def plate_timeline_csv(self, partition_key: str) -> Path:
        """Every well's label at every inspection of the plate up to this one (``plate_timeline``)."""
        return self.plate_report_dir(partition_key) / "timeline.csv"

    def model_comparison_paths(self, model_version: str) -> tuple[Path, Path]:
        """Table 5's Markdown and its ROC figure, beside the model's evaluation report."""
        folder = self.evaluation_report_dir(model_version)
        return folder / "model_comparison.md", folder / "model_comparison_roc.png"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"
