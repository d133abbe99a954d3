"""Where the classifier sees the crystal: Grad-CAM of CrystalNet's crystal classes.

Issue 20 item 4 asks for each hit's crystal position without extra labels, from the
classifier itself. Grad-CAM (Selvaraju et al. 2017) weights each channel of a
convolution's output by the mean gradient of the target score over the map, sums the
weighted channels and keeps the positive part: the map is bright where the features that
raise the score are. HiResCAM (Draelos & Carin 2020) keeps the gradient per cell instead of
its mean (gradient times activation, summed over channels): for a score linear in the
layer's output that is each cell's exact share of the score, so the map cannot light a
region that does not drive the score; with the mean, a channel that fires at the crystal
and elsewhere lights both. The target is the crystal evidence, ``logsumexp`` of the crystal
classes' logits (:data:`crystal_pipeline.classes.CRYSTAL_COLUMNS`), the soft maximum of
the three classes whose probabilities ``crystal_prob`` sums.

Layers: ``conv4`` is CrystalNet's last convolution, but its map is coarse (6 x 6 at
128 px, 3 x 3 at 64: one cell per sixth of the picture); ``conv3`` (the block before it,
at four times the cells per side, before its pool) places the crystal finer. Which one
the pipeline uses is measured by ``bench/crystal_position.py`` (docs/benchmarks.md) and
set by :data:`DEFAULT_LAYER` and :data:`DEFAULT_METHOD`.

Geometry: a map cell's centre is traced back through the network's pools and strides
to a pixel of the evaluation crop (the central 7/8 of the input square,
:func:`crystal_pipeline.model.augment.center_crop`), then through ingest's central square
of the original picture (the integer offsets of ``imaging``'s crop) to fractions of
the picture as taken, so a 4:3 HWI frame's ``x`` is a fraction of its full width.

Batched: one forward and one backward per batch (eval mode has no batch statistics, so
images do not affect each other's gradients); it runs on the model's device, CPU or CUDA.

Precision: ``precision="bf16"`` runs the forward and backward in bf16 autocast, as the
plate's own labelling does on a CPU with bf16 units or on CUDA. The positions were most of a
1536-well plate's run through the service (17 ms a hit in fp32 at 128 px on 2 Zen 4 cores,
docs/benchmarks.md "A site's throughput"); the map is a coarse grid whose peak bf16's 8-bit
mantissa rarely moves, and ``bench/crystal_position.py`` measures both the speed and how
often the two precisions' peaks agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from crystal_pipeline.classes import CRYSTAL_COLUMNS
from crystal_pipeline.model.precision import autocast_context

#: The layer and method whose map the pipeline reports (see the module docstring).
DEFAULT_LAYER = "conv4"
METHODS = ("gradcam", "hirescam")
DEFAULT_METHOD = "gradcam"
#: Per layer: (stride, offset) of its cells' centres in crop pixels (pixel p spans [p, p+1)).
#: conv3 runs after two 2x2 pools: cell c centres on pixel 4c + 2. conv4 (3x3, stride 2, no
#: padding) runs after three pools: cell j spans pooled cells 2j..2j+2, centre 8(2j + 1.5).
LAYERS = {"conv3": (4.0, 2.0), "conv4": (16.0, 12.0)}


@dataclass(frozen=True)
class CrystalPosition:
    """A crystal's position in one picture: the map's peak and the map itself.

    ``x``, ``y`` are fractions of the picture (width, height). ``heat`` is the map on the
    layer's cells, scaled to a peak of 1 (all zero when nothing raises the crystal score);
    ``xs``, ``ys`` are its cell centres as fractions of the picture, to draw it over a thumbnail.
    """

    x: float
    y: float
    heat: tuple[tuple[float, ...], ...]
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def heat_array(self) -> np.ndarray:
        return np.asarray(self.heat, dtype=np.float32)


def grad_cam(model, pixels: np.ndarray | torch.Tensor, *, layer: str = DEFAULT_LAYER, method: str = DEFAULT_METHOD,
             columns: Sequence[int] = CRYSTAL_COLUMNS, precision: str = "fp32") -> np.ndarray:
    """Class-activation maps (N, h, w) float32 >= 0 of ``columns``' logsumexp for a batch of
    CrystalNet inputs (N, res, res) grey levels, computed in eval mode on the model's device.
    ``method``: ``gradcam`` (channel weights = mean gradient) or ``hirescam`` (gradient times
    activation per cell, summed over channels). ``precision``: 'fp32' or 'bf16' (autocast)."""
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {layer!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = getattr(model, layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = torch.as_tensor(np.asarray(pixels)).to(device)
            with autocast_context(device, precision):
                logits = model(x)
            score = torch.logsumexp(logits[:, list(columns)].float(), dim=1)
            (grads,) = torch.autograd.grad(score.sum(), captured[0])
        z = captured[0].detach().float()
        grads = grads.float()
        weights = grads.mean(dim=(2, 3), keepdim=True) if method == "gradcam" else grads
        cam = torch.relu((weights * torch.relu(z)).sum(dim=1))
    finally:
        handle.remove()
        model.train(was_training)
    return cam.cpu().numpy().astype(np.float32)


def cell_centres(model, layer: str, cells: int) -> np.ndarray:
    """The centres of a layer's ``cells`` along one axis, in pixels of the network's input square."""
    stride, offset = LAYERS[layer]
    crop_offset = (model.resolution - model.crop) // 2
    return crop_offset + offset + stride * np.arange(cells, dtype=np.float64)


def peak(heat: np.ndarray) -> tuple[float, float]:
    """The map's peak in cell units (column, row): the brightest cell, refined by the heat-weighted
    mean of it and its neighbours, so the peak is not held to the coarse grid."""
    h, w = heat.shape
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, h), max(c - 1, 0), min(c + 2, w)
    patch = heat[r0:r1, c0:c1].astype(np.float64)
    if patch.sum() <= 0:
        return float(c), float(r)
    rows, cols = np.mgrid[r0:r1, c0:c1]
    return float((patch * cols).sum() / patch.sum()), float((patch * rows).sum() / patch.sum())


def square_to_picture(u: np.ndarray | float, v: np.ndarray | float, resolution: int, width: int, height: int):
    """Input-square pixel coordinates (``u`` across, ``v`` down; pixel p spans [p, p+1)) to
    fractions of a ``width`` x ``height`` picture whose central square ingest resized to
    ``resolution`` (``imaging.central_square``, the crop itself)."""
    from crystal_pipeline.ingest.imaging import central_square

    left, top, side = central_square(width, height)
    scale = side / resolution
    return (left + np.asarray(u) * scale) / width, (top + np.asarray(v) * scale) / height


def crystal_positions(model, pixels: np.ndarray, sizes: Sequence[tuple[int, int]], *, layer: str = DEFAULT_LAYER,
                      method: str = DEFAULT_METHOD, batch_size: int = 64,
                      precision: str = "fp32") -> list[CrystalPosition]:
    """Each image's crystal position (:class:`CrystalPosition`), ``sizes`` the pictures'
    ``(width, height)`` as taken, ``pixels`` their network inputs (N, res, res), the maps
    computed in ``precision`` (:func:`grad_cam`)."""
    out: list[CrystalPosition] = []
    for start in range(0, len(pixels), batch_size):
        maps = grad_cam(model, pixels[start:start + batch_size], layer=layer, method=method, precision=precision)
        for heat, (width, height) in zip(maps, sizes[start:start + batch_size]):
            centres_x = cell_centres(model, layer, heat.shape[1])
            centres_y = cell_centres(model, layer, heat.shape[0])
            col, row = peak(heat)
            x, y = square_to_picture(np.interp(col, np.arange(len(centres_x)), centres_x),
                                     np.interp(row, np.arange(len(centres_y)), centres_y),
                                     model.resolution, width, height)
            xs, _ = square_to_picture(centres_x, 0.0, model.resolution, width, height)
            _, ys = square_to_picture(0.0, centres_y, model.resolution, width, height)
            top = float(heat.max())
            scaled = heat / top if top > 0 else heat
            out.append(CrystalPosition(float(x), float(y), tuple(tuple(round(float(v), 3) for v in r) for r in scaled),
                                       tuple(round(float(v), 5) for v in xs), tuple(round(float(v), 5) for v in ys)))
    return out
