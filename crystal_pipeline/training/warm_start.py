"""Fine-tuning: a run that starts from another model's weights instead of a random draw.

A lab's own images differ from the ones a model learnt on (another imager, other
plates), and a few hundred of its labels are too few to train CrystalNet from scratch
but enough to adapt one (issue 10). A warm start therefore takes everything from the
parent artifact: its weights, and its normalization statistics (the ``pixel_mean`` and
``pixel_std`` buffers travel with the weights), because the features the parent learnt
are calibrated to inputs standardized by those numbers; the stats of today's training
split are not used. With ``freeze_features`` the convolutions keep the parent's filters
and only the fully connected layers learn, the cheap choice when labels are very few.

The trainer gets the parent as a file (the ``crystal-pipeline train --init-artifact``
path, or ``train(init_artifact=...)``) and its name as ``TrainConfig.init_from``; who
resolves ``production`` to a version is the caller (the ``crystalnet_model`` asset), so
this module needs no warehouse and runs on a bare GPU box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crystal_pipeline.files import file_sha256
from crystal_pipeline.model import CrystalNet, load_artifact
from crystal_pipeline.training.config import TrainConfig

# The feature extractor (Table 1's convolutions); the rest are the classifier.
FEATURE_LAYERS = ("conv1", "conv2", "conv3", "conv4")


@dataclass(frozen=True)
class Parent:
    """The model a fine-tune starts from: its name, file, weights and normalization."""

    version: str
    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    mean: np.ndarray
    std: np.ndarray


def check_init(config: TrainConfig, init_artifact: str | os.PathLike | None) -> None:
    """ValueError unless the config's ``init_from`` and the artifact file come together:
    the name alone cannot be loaded, and a file alone would be a nameless parent."""
    if config.init_from and init_artifact is None:
        raise ValueError(f"init_from={config.init_from!r} needs the parent's artifact file "
                         "(train(init_artifact=...) or crystal-pipeline train --init-artifact PATH)")
    if init_artifact is not None and not config.init_from:
        raise ValueError(f"an init artifact ({init_artifact}) needs init_from naming its model version")


def load_parent(path: str | os.PathLike, config: TrainConfig) -> Parent:
    """The parent artifact at ``path``, checked to fit ``config`` (resolution, classes,
    contrast normalization): a fine-tune cannot change the network's shape."""
    artifact = load_artifact(path)
    model_config: dict[str, Any] = artifact["model_config"]
    wanted = {"resolution": config.resolution, "num_classes": config.num_classes, "cn_eps": config.cn_eps}
    differing = [f"{k}: parent {model_config.get(k)}, this run {v}" for k, v in wanted.items()
                 if model_config.get(k) != v]
    if differing:
        raise ValueError(f"cannot fine-tune from {path}: " + "; ".join(differing)
                         + " (set the run's resolution to the parent's)")
    state = artifact["state_dict"]
    norm = artifact.get("normalization") or {}
    mean = norm.get("mean", state["pixel_mean"]).reshape(config.resolution, config.resolution)
    std = norm.get("std", state["pixel_std"]).reshape(config.resolution, config.resolution)
    return Parent(str(config.init_from), Path(path), file_sha256(path), state,
                  mean.numpy().astype(np.float32), std.numpy().astype(np.float32))


def apply(model: CrystalNet, parent: Parent, freeze_features: bool) -> None:
    """Load the parent's weights and normalization into ``model``; with ``freeze_features``
    the convolutions stop learning (no gradient, so the optimizer leaves them alone)."""
    model.load_state_dict(parent.state_dict)
    if freeze_features:
        for name in FEATURE_LAYERS:
            for param in getattr(model, name).parameters():
                param.requires_grad_(False)


def provenance(parent: Parent | None, n_train_labels: int) -> dict[str, Any]:
    """What the artifact records about where its weights came from."""
    return {
        "parent_version": None if parent is None else parent.version,
        "parent_sha256": None if parent is None else parent.sha256,
        "n_train_labels": int(n_train_labels),
    }
