"""Batched softmax inference: the one loop every caller runs a model's images through.

Training's evaluation, :func:`predict_proba`, the fast CPU model and plate labelling
(CUDA and CPU) all take their probabilities from here, so "the paper's softmax output
layer over many images" is written once: cut the images into batches, move each to the
model's device, compute float32 logits (under autocast when asked), softmax each row,
collect on the CPU. Nothing here changes the numbers a caller got before it moved here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

import numpy as np
import torch

Logits = Callable[[torch.Tensor], torch.Tensor]


def softmax_probs(logits: torch.Tensor) -> torch.Tensor:
    """The paper's softmax output layer: class probabilities (float32) summing to 1 per row."""
    return torch.softmax(logits.float(), dim=1)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (central crop, no augmentation), its train/eval state restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def as_image_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grey images as an (N, H, W) tensor; a single (H, W) image becomes a batch of one."""
    data = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    return data.unsqueeze(0) if data.dim() == 2 else data


def iter_logits(logits_of: Logits, images: torch.Tensor, batch_size: int, *,
                device: torch.device | None = None,
                autocast: ContextManager[Any] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, float32 logits)`` of consecutive batches of ``images``.

    Each batch is moved to ``device`` (when given) and run under ``autocast`` (when given).
    The caller holds ``torch.inference_mode()`` (a generator must not enter it: the mode
    would leak into the caller between batches).
    """
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        with autocast:
            logits = logits_of(batch)
        yield start, logits.float()


def batched_softmax(logits_of: Logits, images: torch.Tensor, batch_size: int, *, num_classes: int,
                    device: torch.device | None = None,
                    autocast: ContextManager[Any] | None = None) -> np.ndarray:
    """Class probabilities (N, num_classes) float32 on the CPU, ``batch_size`` images at a time."""
    with torch.inference_mode():
        out = [softmax_probs(logits).cpu()
               for _, logits in iter_logits(logits_of, images, batch_size, device=device, autocast=autocast)]
    if not out:
        return np.zeros((0, num_classes), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T): T > 1 softens, T < 1 sharpens, T = 1 changes nothing.

    The one place a temperature is applied: evaluation (:mod:`crystal_pipeline.evaluation.calibration`
    re-exports it), plate labelling and ``crystal-pipeline label`` all call this. Same dtype out as in
    for float32 input, so a plate's rows keep their precision; the ranking and arg-max never change.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def calibrated(predict: Callable[[np.ndarray], np.ndarray], temperature: float) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` (pixels -> softmax probabilities) with ``temperature`` applied to its output
    (float32, like the uncalibrated path); ``predict`` itself when T = 1."""
    if temperature == 1.0:
        return predict
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return lambda pixels: apply_temperature(predict(pixels), temperature).astype(np.float32)


def predict_proba(model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, num_classes) float32 for 8-bit grey images (N, H, W).

    The stored per-pixel normalization and CN happen inside the model, so callers
    pass the same uint8 pixels the tensors hold. Runs in eval mode on the model's
    device; the model's train/eval state is restored afterwards.
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        return batched_softmax(model, as_image_batch(images), batch_size, num_classes=model.num_classes,
                               device=device)
