"""CrystalNet's training-time geometry: horizontal mirroring and 2-D similarity
transforms (Table 1, layers 2 and 3), applied to a whole batch on the device.

Mirror, rotation, scale, shift and the central 7/8 crop are folded into one 2x3
affine matrix per image and applied with a single ``affine_grid``/``grid_sample``,
so augmentation is a couple of GPU kernels per batch and the accelerator never
waits on CPU workers (the airbench habit). Random parameters come from an explicit
``torch.Generator`` so that a training run can re-derive the exact augmentation of
any update (stateless per update), which is what makes resume and DDP repeatable.

Conventions (tested in tests/test_model.py):
- a positive ``shift_px`` (dx, dy) moves image content right/down by that many
  pixels of the input image;
- ``scale`` follows the paper: 1.2 "zooms out" (content appears smaller), 0.8
  zooms in; the output samples the input at ``scale`` times the pixel pitch;
- mirroring flips left/right before the transform, as in Table 1's layer order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def crop_size(resolution: int) -> int:
    """The central 7/8 that Table 1 keeps after the transform layer (112 at 128)."""
    return resolution * 7 // 8


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transform; defaults are the paper's (Procedure).

    ``max_shift_px=None`` means 8 px at 128 px, scaled with the resolution, so a
    64 px model sees the same relative jitter as the paper's.
    """

    mirror_p: float = 0.5
    max_shift_px: float | None = None
    max_rotation_deg: float = 60.0
    scale_min: float = 0.8
    scale_max: float = 1.2

    def shift_for(self, resolution: int) -> float:
        if self.max_shift_px is not None:
            return float(self.max_shift_px)
        return 8.0 * resolution / 128.0


def similarity_theta(
    mirror: torch.Tensor,
    angle_rad: torch.Tensor,
    scale: torch.Tensor,
    shift_px: torch.Tensor,
    in_size: int,
    out_size: int,
) -> torch.Tensor:
    """Sampling matrices (N, 2, 3) for ``F.affine_grid`` with align_corners=False.

    In centred pixel coordinates the output pixel ``u`` samples the input at
    ``M * scale * R(angle) * (u - shift)`` where M flips x when ``mirror``. With
    mirror False, angle 0, scale 1 and shift 0 this is exactly the central crop
    (output pixel i reads input pixel i + (in_size - out_size) / 2).
    """
    mirror = mirror.to(angle_rad.dtype)
    cos, sin = torch.cos(angle_rad), torch.sin(angle_rad)
    flip = 1.0 - 2.0 * mirror  # -1 where mirrored
    # A = M * s * R, R = [[cos, -sin], [sin, cos]]
    a00 = flip * scale * cos
    a01 = -flip * scale * sin
    a10 = scale * sin
    a11 = scale * cos
    ratio = out_size / in_size
    dx, dy = shift_px[:, 0], shift_px[:, 1]
    # translation in normalized input units: -(2 / in_size) * A @ d
    tx = -(2.0 / in_size) * (a00 * dx + a01 * dy)
    ty = -(2.0 / in_size) * (a10 * dx + a11 * dy)
    row0 = torch.stack([a00 * ratio, a01 * ratio, tx], dim=1)
    row1 = torch.stack([a10 * ratio, a11 * ratio, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def random_theta(
    n: int,
    in_size: int,
    params: AugmentParams,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` random mirror+similarity transforms (uniform in each range)."""
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu")
    )
    u = torch.rand(n, 5, generator=generator, device=device)
    mirror = u[:, 0] < params.mirror_p
    angle = (2.0 * u[:, 1] - 1.0) * math.radians(params.max_rotation_deg)
    scale = params.scale_min + u[:, 2] * (params.scale_max - params.scale_min)
    max_shift = params.shift_for(in_size)
    shift = (2.0 * u[:, 3:5] - 1.0) * max_shift
    return similarity_theta(mirror, angle, scale, shift, in_size, crop_size(in_size))


def warp(images: torch.Tensor, theta: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample (N, C, H, W) images through ``theta`` into out_size x out_size.

    Outside the input the result is 0, which after contrast normalization is the
    local mean: zoom-out and rotation corners look like featureless background
    rather than a black frame the network could learn from.
    """
    n, c = images.shape[:2]
    grid = F.affine_grid(theta.to(images.dtype), [n, c, out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def center_crop(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """The deterministic evaluation path: a slice, no resampling."""
    h, w = images.shape[-2:]
    top, left = (h - out_size) // 2, (w - out_size) // 2
    return images[..., top : top + out_size, left : left + out_size]
