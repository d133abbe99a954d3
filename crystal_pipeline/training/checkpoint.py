"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint (``<model.pt>.ckpt``) holds the config, the weights, the optimizer state,
the update reached, the history so far, the time and images trained, the precision each
stretch of updates ran in, and the tensors'
content fingerprint (:func:`crystal_pipeline.tensors.fingerprint`, the same value the
artifact records). It is written atomically (temp file, fsync, rename), so a crash leaves
the previous checkpoint or the new one. A resume refuses a checkpoint whose config
differs in anything but :data:`~crystal_pipeline.training.config.RUNTIME_FIELDS`, or
whose tensors differ.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from crystal_pipeline.files import atomic_write
from crystal_pipeline.model import cpu_state
from crystal_pipeline.training.config import RUNTIME_FIELDS, TrainConfig

CHECKPOINT_FORMAT = "crystalnet-checkpoint/1"


@dataclass
class RunState:
    """Where a run is, besides its weights and optimizer: what a checkpoint carries."""

    update: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_trained: int = 0
    # The resolved precision of each stretch of updates: [{'from_update': 0, 'precision': 'bf16'}, ...];
    # one entry unless a resume ran in another precision (TrainConfig.precision); empty for
    # checkpoints written before precisions were recorded.
    precision_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_val_acc(self) -> float | None:
        return self.history[-1]["val_acc"] if self.history else None


def checkpoint_path_for(out_path: str | os.PathLike) -> Path:
    """Where the run writing ``out_path`` keeps its checkpoint: ``<out_path>.ckpt``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".ckpt")


def save_checkpoint(path: Path, config: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: RunState, tensors_fingerprint: str | None) -> None:
    """Write the checkpoint at ``state.update`` atomically."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "update": state.update,
        "history": state.history,
        "train_seconds": state.train_seconds,
        "images_trained": state.images_trained,
        "precision_log": state.precision_log,
        "tensors_fingerprint": tensors_fingerprint,
    }
    atomic_write(path, functools.partial(torch.save, checkpoint))


def load_checkpoint(path: Path, config: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    tensors_fingerprint: str | None) -> RunState:
    """Load ``path`` into ``model`` and ``optimizer`` (after :func:`check_resumable`); its run state."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    check_resumable(checkpoint, config, tensors_fingerprint, path)
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return RunState(
        update=int(checkpoint["update"]),
        history=list(checkpoint["history"]),
        train_seconds=float(checkpoint["train_seconds"]),
        images_trained=int(checkpoint["images_trained"]),
        precision_log=list(checkpoint.get("precision_log", [])),
    )


def check_resumable(checkpoint: Mapping[str, Any], config: TrainConfig, tensors_fingerprint: str | None,
                    path: Path) -> None:
    """ValueError unless ``checkpoint`` is ours, for this config (runtime fields aside) and these tensors.

    ``tensors_fingerprint`` None skips the tensor check (ranks other than 0 do not hash).
    """
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a CrystalNet training checkpoint")
    saved = checkpoint["config"]
    current = config.to_dict()
    differing = sorted(k for k in current if k not in RUNTIME_FIELDS and saved.get(k) != current[k])
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in differing)
        raise ValueError(f"cannot resume {path}: the config changed ({detail})")
    recorded = checkpoint.get("tensors_fingerprint")
    if tensors_fingerprint and recorded and recorded != tensors_fingerprint:
        raise ValueError(f"cannot resume {path}: the training tensors changed since it was written")


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a loaded optimizer's state (momentum buffers) to the device its parameters are on."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device)
