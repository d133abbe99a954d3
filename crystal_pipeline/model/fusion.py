"""Visible + UV early fusion: the two pictures of a drop as the two channels of one image.

Issue 20: protein crystals fluoresce under UV and salt crystals do not, so a model that sees
both pictures can tell a salt crystal (a false hit for a visible-only model) from a protein
crystal, and see small crystals precipitate hides in white light. Early fusion stacks the
pictures (visible channel 0, UV channel 1) into a ``CrystalNet(in_channels=2)``; both go
through the same crop, warp and per-pixel normalization (per channel). AXIS (EMBL) instead
runs a visible and a UV model and takes the larger crystal score: :func:`axis_rule`, the
comparison the benchmark (bench/uv_fusion.py) makes.
"""

from __future__ import annotations

import os

import numpy as np

VISIBLE_CHANNEL, UV_CHANNEL = 0, 1
#: A model's kind is how many pictures of a drop it reads (``models.in_channels``): the
#: registry keeps one production model of each kind, and plates choose by it.
VISIBLE_CHANNELS, FUSED_CHANNELS = 1, 2
KIND_NAMES = {VISIBLE_CHANNELS: "visible", FUSED_CHANNELS: "fused"}


def stack_pictures(visible: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N, 2, res, res) uint8 from the (N, res, res) visible and UV pictures of the same drops."""
    visible, uv = np.asarray(visible), np.asarray(uv)
    if visible.shape != uv.shape or visible.ndim != 3:
        raise ValueError(f"visible {visible.shape} and UV {uv.shape} must be the same (N, res, res) stack")
    return np.stack([visible, uv], axis=1)


def load_pair(visible_path: str | os.PathLike, uv_path: str | os.PathLike, resolution: int) -> np.ndarray:
    """(2, res, res) uint8: one drop's visible and UV files, each read as a visible one is
    (``imaging.load_grey``: grey, central square, resized)."""
    from crystal_pipeline.ingest.imaging import load_grey

    return np.stack([load_grey(visible_path, resolution), load_grey(uv_path, resolution)])


def channel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and std images of each channel, (C, res, res) float32, of a (N, C, res,
    res) training stack: what ``CrystalNet.set_normalization`` takes for a fused model."""
    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"expected a non-empty (N, C, res, res) stack, got {x.shape}")
    return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def axis_rule(visible_crystal: np.ndarray, uv_crystal: np.ndarray) -> np.ndarray:
    """AXIS's late fusion: the larger of a visible-only and a UV-only model's crystal scores."""
    return np.maximum(np.asarray(visible_crystal, dtype=np.float64), np.asarray(uv_crystal, dtype=np.float64))


def model_channels(model) -> int:
    """Input channels of a model (1 for every model from before UV, and for prepared engines)."""
    return int(getattr(model, "in_channels", 1))


def model_inputs(model, split) -> np.ndarray:
    """What ``model`` reads of a tensors ``Split``: its (N, res, res) visible pictures for a
    one-channel model, visible and UV stacked for a fused one (``Split.channels``), so
    evaluation scores a fused model on the same test wells, each with its UV picture."""
    in_channels = model_channels(model)
    if in_channels == 1:
        return split.pixels
    if split.uv is None:
        raise ValueError(f"a {in_channels}-channel (visible + UV) model needs tensors with UV pictures; "
                         "these tensors are visible only (is the archive's UV ingested?)")
    return split.channels()
