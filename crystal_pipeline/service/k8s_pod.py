"""The pod a training run becomes on Kubernetes (``compute.launcher: k8s``).

The asset hands Dagster Pipes' Kubernetes client (``dagster_k8s.PipesK8sClient``) the
same torchrun argv it runs locally, plus this pod spec. Every path in that argv (the
tensors, the model, the ``--result`` file) lies under the data directory, so the pod
mounts the lab's shared data volume (a PersistentVolumeClaim) **at the same path** as
the Dagster run worker sees it: the trainer writes where the asset reads, with no copy
step. The spec is a plain dict in the Kubernetes API's camelCase; Pipes merges it with
its own container (image, command, the ``DAGSTER_PIPES_*`` environment) and reads the
trainer's messages from the pod's log. Nothing here imports Dagster or a Kubernetes
client, so the spec is testable anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

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
