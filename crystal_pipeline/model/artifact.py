"""The trained-model artifact (DESIGN.md's ``model.pt``): written and read here, nowhere else.

An artifact is one ``torch.save``d dict: ``format`` (:data:`ARTIFACT_FORMAT`),
``created_at``, ``model_config`` (what :func:`build_model` needs), ``state_dict`` (CPU
tensors, including the normalization buffers) and the metadata its writer adds, which
for a training run is ``preset``, ``config`` (the whole TrainConfig), ``normalization``
(the stats' mean and std images), ``history``, ``tensors_fingerprint`` (the tensors'
content fingerprint), ``crop`` (the square of each picture it saw: ``preprocessing.crop``),
``trained_on``, ``val_accuracy``, ``crystal_auc``,
``val_predictions``, ``updates``, ``train_seconds``, ``images_per_s``, ``device``,
``world_size``, ``torch_version``, ``precision`` (the resolved training precision, 'fp32',
'bf16' or 'mixed' when resumed sessions differed), ``precision_reason`` and ``precision_log``
(which updates ran in which), and where the weights started (``parent_version`` and
``parent_sha256``, None from scratch; ``n_train_labels``). Promotion adds the calibration
(:func:`add_calibration`): ``temperature`` (fitted on validation) and ``crystal_threshold``
(the calibrated crystal_prob keeping 95% crystal recall on validation), so a bare box
labels a plate exactly as the pipeline does; :func:`calibration_of` reads them, with the
defaults of artifacts written before (T = 1, the registry's threshold, else 0.5). It is written atomically, so a reader never loads
half a model; :func:`load` returns the module with everything but the weights attached
as ``model.artifact_meta``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from pathlib import Path
from typing import Any

import torch

from crystal_pipeline.files import atomic_write
from crystal_pipeline.model.device import resolve_device
from crystal_pipeline.model.network import CrystalNet, build_model

ARTIFACT_FORMAT = "crystalnet-artifact/1"
DEFAULT_THRESHOLD = 0.5


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of ``model``'s state dict (what artifacts and checkpoints store)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_artifact(path: str | os.PathLike, model: CrystalNet, *, created_at: str | None = None,
                  model_config: dict[str, Any] | None = None, **metadata: Any) -> Path:
    """Write ``model`` and ``metadata`` as an artifact at ``path``, atomically; returns ``path``.

    ``model_config`` defaults to ``model.config()``; ``created_at`` to now (UTC, ISO 8601).
    ``metadata`` holds plain values and CPU tensors only (it is loaded with
    ``weights_only=True``); see the module docstring for the keys training writes.
    """
    artifact = {
        "format": ARTIFACT_FORMAT,
        "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_config": model_config if model_config is not None else model.config(),
        "state_dict": cpu_state(model),
        **metadata,
    }
    return atomic_write(path, functools.partial(torch.save, artifact))


class ArtifactError(RuntimeError):
    """A model file is missing, unreadable or not a CrystalNet artifact."""


def load_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact dict (tensors on CPU), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model artifact not found: {path}")
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise ArtifactError(f"cannot read model artifact {path}: {exc}") from exc
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} is not a CrystalNet artifact (format {ARTIFACT_FORMAT})")
    return artifact


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> CrystalNet:
    """A trained CrystalNet from its artifact, in eval mode on ``device``.

    The returned module carries the artifact's metadata (everything but the
    weights) as ``model.artifact_meta``.
    """
    artifact = load_artifact(path)
    model = build_model(artifact["model_config"])
    try:
        model.load_state_dict(artifact["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit the stored model config: {exc}") from exc
    model.artifact_meta = {k: v for k, v in artifact.items() if k != "state_dict"}
    target = resolve_device(device)
    model.to(target)
    if target.type == "cuda":
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model.eval()


def add_calibration(path: str | os.PathLike, *, temperature: float, crystal_threshold: float | None) -> Path:
    """Store ``temperature`` and ``crystal_threshold`` (None: the split had no crystals) in
    the artifact at ``path``, rewriting it atomically; returns ``path``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    artifact = load_artifact(path)
    artifact["temperature"] = float(temperature)
    artifact["crystal_threshold"] = None if crystal_threshold is None else float(crystal_threshold)
    return atomic_write(path, functools.partial(torch.save, artifact))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def calibration_of(meta: dict[str, Any] | None, registry_threshold: float | None = None) -> tuple[float, float]:
    """``(temperature, crystal threshold)`` a model labels plates with, from its artifact
    metadata: an artifact without calibration has T = 1, and its threshold is the
    registry's (``registry_threshold``) or else :data:`DEFAULT_THRESHOLD`."""
    meta = meta or {}
    temperature = _finite(meta.get("temperature"))
    threshold = _finite(meta.get("crystal_threshold"))
    if threshold is None:
        threshold = _finite(registry_threshold)
    return (temperature if temperature and temperature > 0 else 1.0,
            DEFAULT_THRESHOLD if threshold is None else threshold)
