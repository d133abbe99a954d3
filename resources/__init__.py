"""Dagster resources: the only Dagster code that knows where files and the database live.

Every default comes from ``crystal_pipeline.layout`` (``CRYSTAL_DATA_DIR``,
``CRYSTAL_RAW_DIR``, ``CRYSTAL_INCOMING_DIR``), so the UI, the CLI and the tests
agree without extra config; any field can still be set per deployment or per run.
"""


from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource, PipesSubprocessClient
from pydantic import Field

from crystal_pipeline.ingest.imaging import CROPS, DEFAULT_CROP
from crystal_pipeline.layout import DataLayout, default_data_dir, default_incoming_dir, default_raw_dir
from crystal_pipeline.warehouse import Warehouse, open_warehouse


class StorageResource(ConfigurableResource):
    """The data directory, the raw archive and the incoming folder."""

    data_dir: Optional[str] = Field(default=None, description="Defaults to $CRYSTAL_DATA_DIR or ./data")
    raw_dir: Optional[str] = Field(default=None, description="Defaults to $CRYSTAL_RAW_DIR or <data_dir>/raw")
    incoming_dir: Optional[str] = Field(
        default=None, description="Defaults to $CRYSTAL_INCOMING_DIR or <data_dir>/incoming"
    )

    @property
    def layout(self) -> DataLayout:
        data_dir = Path(self.data_dir).resolve() if self.data_dir else default_data_dir()
        raw_dir = Path(self.raw_dir).resolve() if self.raw_dir else (
            DataLayout.raw_dir_under(data_dir) if self.data_dir else default_raw_dir())
        incoming = Path(self.incoming_dir).resolve() if self.incoming_dir else (
            DataLayout.incoming_dir_under(data_dir) if self.data_dir else default_incoming_dir())
        return DataLayout(data_dir, raw_dir, incoming)


class WarehouseResource(ConfigurableResource):
    """The warehouse: a DuckDB file (writers share the Dagster pool ``duckdb``) or, with
    ``CRYSTAL_WAREHOUSE=ducklake``, a DuckLake that plate runs write at once."""

    storage: StorageResource
    path: Optional[str] = Field(default=None, description="A DuckDB file; default: the backend "
                                "$CRYSTAL_WAREHOUSE names (<data_dir>/warehouse.duckdb, or the lake)")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for another process's lock")

    def get(self) -> Warehouse:
        if self.path:
            return Warehouse(Path(self.path), lock_timeout_s=self.lock_timeout_s)
        return open_warehouse(self.storage.layout, lock_timeout_s=self.lock_timeout_s)


class PreprocessingResource(ConfigurableResource):
    """Preprocessing settings shared by every asset that reads or writes tensors."""

    resolution: int = Field(default=128, description="Side of the square tensors (the paper: 128)")
    workers: Optional[int] = Field(default=None, description="Decode processes; default: all cores")
    crop: str = Field(default=DEFAULT_CROP, description=f"Which square of each picture: one of {CROPS} "
                      "(centre: the paper's central square; drop: a square around the located drop)")

def build_resources(storage: Optional[StorageResource] = None) -> dict:
    """The resource set of the code location; tests pass their own storage."""
    storage = storage or StorageResource()
    return {
        "storage": storage,
        "warehouse": WarehouseResource(storage=storage),
        "preprocessing": PreprocessingResource(),
        "compute": ComputeResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


class ComputeResource(ConfigurableResource):
    """Where and how training runs.

    ``device``: ``auto`` picks CUDA, then MPS, then the CPU. ``launcher``: ``pipes`` (the
    default) runs ``torchrun --nproc_per_node N -m crystal_pipeline train`` as its own
    process through Dagster Pipes, so a crash or an out-of-memory kill of training never
    takes the run worker with it and N processes can share the GPUs of one node;
    ``in_process`` calls the same training function inside the step (debugging, notebooks);
    ``k8s`` runs the same command in a pod through Pipes' Kubernetes client
    (``dagster_k8s.PipesK8sClient``), the data directory mounted from ``k8s_data_claim`` at
    the same path (crystal_pipeline/service/k8s_pod.py, docs/deployment.md).
    """

    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps")
    launcher: str = Field(default="pipes", description="pipes (torchrun in a subprocess), in_process or k8s")
    nproc_per_node: int = Field(default=1, description="training processes (torchrun ranks) on this machine")
    k8s_image: str = Field(default="", description="k8s: the image with this project and a CUDA torch installed")
    k8s_namespace: str = Field(default="default", description="k8s: namespace of the training pod")
    k8s_data_claim: str = Field(default="crystal-data",
                                description="k8s: PersistentVolumeClaim holding the data directory (ReadWriteMany)")
    k8s_gpus: int = Field(default=1, description="k8s: nvidia.com/gpu limit of the pod (0: a CPU pod)")
    k8s_node_selector: str = Field(default="", description="k8s: key=value[,key=value] for the GPU node pool")
    k8s_python: str = Field(default="python", description="k8s: the interpreter inside the image")
    k8s_kubeconfig: str = Field(default="", description="k8s: kubeconfig file; empty: in-cluster config")
