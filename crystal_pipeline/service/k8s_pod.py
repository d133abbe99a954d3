"""The pods a training run and a plate run become on Kubernetes.

Training (``compute.launcher: k8s``): the pod Pipes' client starts for torchrun.
Plate runs (``CRYSTAL_K8S_DATA_CLAIM`` set, with the lake warehouse): the
``dagster-k8s/config`` tag that ``K8sRunLauncher`` reads from ``label_plate_job``'s
runs, so each plate run is a Job of its own, writing the shared DuckLake.

For training, the asset hands Dagster Pipes' Kubernetes client (``dagster_k8s.PipesK8sClient``) the
same torchrun argv it runs locally, plus this pod spec. Every path in that argv (the
tensors, the model, the ``--result`` file) lies under the data directory, so the pod
mounts the lab's shared data volume (a PersistentVolumeClaim) **at the same path** as
the Dagster run worker sees it: the trainer writes where the asset reads, with no copy
step. The spec is a plain dict in the Kubernetes API's camelCase; Pipes merges it with
its own container (image, command, the ``DAGSTER_PIPES_*`` environment) and reads the
trainer's messages from the pod's log. A plate run's pod mounts the same volume at the
same path, so its incoming folder, models and reports are where the sensor and the UI
look. Nothing here imports Dagster or a Kubernetes client, so both are testable anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from crystal_pipeline import layout

DATA_VOLUME = "crystal-data"
SHM_VOLUME = "dshm"  # torch's DataLoader and NCCL need more /dev/shm than a pod's 64 MiB default


@dataclass(frozen=True)
class TrainingPod:
    """What a lab sets for the training pod (``ComputeResource`` fields of the same names)."""

    data_dir: str  # the data directory's absolute path, as the run worker sees it
    data_claim: str  # PersistentVolumeClaim holding that directory (ReadWriteMany)
    gpus: int = 1  # nvidia.com/gpu limit; 0 for a CPU pod
    node_selector: tuple[tuple[str, str], ...] = ()  # e.g. (("pool", "gpu"),)
    service_account: str | None = None
    shm_gib: int = 8

    def __post_init__(self) -> None:
        problems = []
        if not PurePosixPath(self.data_dir).is_absolute():
            problems.append(f"data_dir must be an absolute path, got {self.data_dir!r}")
        if not self.data_claim:
            problems.append("data_claim (a PersistentVolumeClaim name) is required")
        if self.gpus < 0:
            problems.append(f"gpus must be >= 0, got {self.gpus}")
        if problems:
            raise ValueError("invalid training pod: " + "; ".join(problems))


def training_pod_spec(pod: TrainingPod) -> dict[str, Any]:
    """``base_pod_spec`` for ``PipesK8sClient.run``: the data volume at its own path,
    shared memory for the torchrun ranks, the GPU limit and the node pool."""
    data_dir = os.fspath(pod.data_dir)
    resources: dict[str, Any] = {}
    if pod.gpus:
        resources = {"limits": {"nvidia.com/gpu": str(pod.gpus)}}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{
            "volumeMounts": [{"name": DATA_VOLUME, "mountPath": data_dir},
                             {"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
            "resources": resources,
            "workingDir": data_dir,
        }],
        "volumes": [{"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": pod.data_claim}},
                    {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{pod.shm_gib}Gi"}}],
    }
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    return spec


def parse_node_selector(text: str) -> tuple[tuple[str, str], ...]:
    """``"pool=gpu,zone=a"`` -> ``(("pool", "gpu"), ("zone", "a"))``; empty text, none."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"node selector entries are key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


K8S_CONFIG_TAG = "dagster-k8s/config"  # the run tag K8sRunLauncher and k8s_job_executor merge into the Job
CATALOG_SECRET_KEY = "url"  # the key of the Secret that holds the lake catalog's connection string


@dataclass(frozen=True)
class PlateRunPod:
    """What a plate run's pod needs beyond the run launcher's image: the shared data volume at
    the data directory's own path (incoming plates, models, reports, the lake's Parquet files),
    the lake warehouse with its catalog URL from a Secret (never in a tag, which the UI shows),
    and a CPU pod's size. No GPU: a 1536-well plate labels in seconds on CPU (docs/benchmarks.md)."""

    data_dir: str
    data_claim: str  # ReadWriteMany PersistentVolumeClaim holding data_dir
    catalog_secret: str  # Secret with key ``url``: the lake catalog (CRYSTAL_WAREHOUSE_URL)
    lake_data_path: str | None = None  # default <data_dir>/lake, on the same claim
    cpu: str = "2"
    memory: str = "4Gi"
    node_selector: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not PurePosixPath(self.data_dir).is_absolute():
            problems.append(f"data_dir must be an absolute path, got {self.data_dir!r}")
        if not self.data_claim:
            problems.append("data_claim (a ReadWriteMany PersistentVolumeClaim) is required")
        if not self.catalog_secret:
            problems.append(f"catalog_secret (a Secret whose key {CATALOG_SECRET_KEY!r} is the lake catalog URL) "
                            f"is required: set {layout.ENV_K8S_CATALOG_SECRET}")
        if self.lake_data_path and not PurePosixPath(self.lake_data_path).is_absolute():
            problems.append(f"lake_data_path must be an absolute path, got {self.lake_data_path!r}")
        if problems:
            raise ValueError("invalid plate run pod: " + "; ".join(problems))


def plate_run_k8s_config(pod: PlateRunPod) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value (dagster-k8s's snake_case schema) for a plate run:
    the lake settings in the environment, the data volume mounted at its own path, CPU and
    memory requested so the scheduler spreads a labelling wave over nodes."""
    data_dir = pod.data_dir
    env = [{"name": layout.ENV_DATA_DIR, "value": data_dir},
           {"name": layout.ENV_WAREHOUSE, "value": "ducklake"},
           {"name": layout.ENV_LAKE_DATA_PATH, "value": pod.lake_data_path or f"{data_dir}/lake"},
           {"name": layout.ENV_WAREHOUSE_URL,
            "value_from": {"secret_key_ref": {"name": pod.catalog_secret, "key": CATALOG_SECRET_KEY}}}]
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": DATA_VOLUME, "persistent_volume_claim": {"claim_name": pod.data_claim}}]}
    if pod.node_selector:
        pod_spec["node_selector"] = dict(pod.node_selector)
    return {
        "container_config": {
            "env": env,
            "volume_mounts": [{"name": DATA_VOLUME, "mount_path": data_dir}],
            "resources": {"requests": {"cpu": pod.cpu, "memory": pod.memory}, "limits": {"memory": pod.memory}},
        },
        "pod_spec_config": pod_spec,
    }


def plate_run_pod_from_env() -> PlateRunPod | None:
    """The plate-run pod the environment asks for: none unless ``CRYSTAL_K8S_DATA_CLAIM`` is set.
    Pods on several nodes write the warehouse at once, which only the lake allows: with the
    DuckDB file (one writer, and a file lock that shared storage may not honour) it refuses."""
    claim = os.environ.get(layout.ENV_K8S_DATA_CLAIM, "").strip()
    if not claim:
        return None
    if layout.default_warehouse_backend() != "ducklake":
        raise ValueError(f"{layout.ENV_K8S_DATA_CLAIM} runs each plate in its own pod, and pods on several "
                         f"machines write the warehouse at once: set {layout.ENV_WAREHOUSE}=ducklake "
                         "(docs/deployment.md, 'Plate runs as pods')")
    lake = layout.default_lake_data_path()
    return PlateRunPod(data_dir=os.fspath(layout.default_data_dir()), data_claim=claim,
                       catalog_secret=os.environ.get(layout.ENV_K8S_CATALOG_SECRET, "").strip(),
                       lake_data_path=os.fspath(lake) if lake else None,
                       node_selector=parse_node_selector(os.environ.get(layout.ENV_K8S_NODE_SELECTOR, "")))


def plate_run_tags() -> dict[str, str]:
    """Tags ``label_plate_job`` adds to every run: the pod config when plate runs are pods, else none."""
    pod = plate_run_pod_from_env()
    return {K8S_CONFIG_TAG: json.dumps(plate_run_k8s_config(pod), sort_keys=True)} if pod else {}
