"""A hit's thumbnail with the model's crystal map laid over it (issue 20 items 4 and 7).

The plate report and its review page show each hit as a small photograph; where the
hit has a crystal position (:class:`crystal_pipeline.model.cam.CrystalPosition`), this
module draws its class-activation map over the photograph, warm and translucent where
the map is high, and a small cross at the map's peak (the ``crystal_x``, ``crystal_y`` of
``hits.csv``), so a reviewer sees at a glance what the model took for a crystal.

The map lives on the network's cells, whose centres ``xs``, ``ys`` are fractions of the
picture; it is interpolated bilinearly onto the thumbnail's pixels and fades out half a
cell beyond the outer centres (outside the evaluation crop the network saw nothing).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

#: Largest opacity of the overlay, where the map peaks.
MAX_ALPHA = 0.55


def heat_on_grid(position, width: int, height: int) -> np.ndarray:
    """The map at the centres of a ``width`` x ``height`` grid of pixels (float32, 0..1)."""
    heat = position.heat_array()
    xs, ys = np.asarray(position.xs), np.asarray(position.ys)
    fx, fy = (np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height
    cols = np.stack([np.interp(fx, xs, heat[r]) for r in range(heat.shape[0])])  # (rows, width)
    grid = np.stack([np.interp(fy, ys, cols[:, c]) for c in range(width)], axis=1)  # (height, width)
    half_x = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 0.5
    half_y = (ys[1] - ys[0]) / 2 if len(ys) > 1 else 0.5
    inside_x = (fx >= xs[0] - half_x) & (fx <= xs[-1] + half_x)
    inside_y = (fy >= ys[0] - half_y) & (fy <= ys[-1] + half_y)
    return (grid * inside_y[:, None] * inside_x[None, :]).astype(np.float32)


def overlay(rgb: np.ndarray, position) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with the map blended in (hot colours) and a cross at the peak."""
    height, width = rgb.shape[:2]
    heat = heat_on_grid(position, width, height)[..., None]
    colour = np.concatenate([np.ones_like(heat), heat, np.zeros_like(heat)], axis=2) * 255.0  # red -> yellow
    alpha = MAX_ALPHA * heat
    out = rgb.astype(np.float32) * (1 - alpha) + colour * alpha
    px, py = int(position.x * width), int(position.y * height)
    arm = max(2, width // 40)
    for dx in range(-arm, arm + 1):  # a cyan cross, clipped to the picture
        for x, y in ((px + dx, py), (px, py + dx)):
            if 0 <= x < width and 0 <= y < height:
                out[y, x] = (0, 255, 255)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heat_thumbnail(path: Path, position, size: int) -> bytes | None:
    """A JPEG thumbnail (longest side ``size``) of the picture with its crystal map, or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buffer = io.BytesIO()
            Image.fromarray(overlay(np.asarray(im), position)).save(buffer, format="JPEG", quality=85)
    except Exception:  # a preview must never cost the report
        return None
    return buffer.getvalue()


def thumbnails_with_heat(rows: Iterable, plain: Callable[[Path], bytes | None],
                         size: int) -> Callable[[Path], bytes | None]:
    """A thumbnail function for the report: the map over the rows that have a crystal position,
    ``plain`` for every other picture."""
    positions = {Path(r.path): r.crystal for r in rows if getattr(r, "crystal", None) is not None}

    def thumbnail(path: Path) -> bytes | None:
        position = positions.get(Path(path))
        return plain(path) if position is None else heat_thumbnail(path, position, size)

    return thumbnail
