"""The well and the drop every synthetic photograph starts from, and its nuisances.

A microbatch-under-oil image is a bright well seen through a dark plastic rim, with
a drop whose meniscus refracts light into a dark band. None of what is drawn here
depends on the outcome class: brightness, drop size and position, illumination,
focus and noise are drawn independently, so a model cannot read the class off them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from crystal_pipeline.synthetic.blur import gaussian_filter
from crystal_pipeline.synthetic.imager import IMAGER_A, Imager


@lru_cache(maxsize=8)
def pixel_grid(size: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of pixel centres (``size`` rows, ``width`` or ``size`` columns),
    shared read-only per shape."""
    yy, xx = np.mgrid[0:size, 0:width or size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def smooth_noise(rng: np.random.Generator, size: int, cells: int, width: int | None = None) -> np.ndarray:
    """Zero-mean, unit-ish low-frequency noise: a few random cells, bicubic-upsampled to
    ``size`` rows and ``width`` (or ``size``) columns."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width or size, size), Image.BICUBIC))


@dataclass(frozen=True)
class Drop:
    """Where the drop lies: centre, mean radius, axes, rotation, boundary ripple."""

    cx: float
    cy: float
    radius: float
    ax: float
    by: float
    angle: float
    ripple: tuple[tuple[int, float, float], ...]  # (harmonic, amplitude, phase)

    def sample_points(self, rng: np.random.Generator, n: int, reach: float = 0.9) -> np.ndarray:
        """n points spread evenly over the drop's inner ``reach`` (x, y columns)."""
        rho = np.sqrt(rng.random(n)) * reach * self.radius
        theta = rng.random(n) * 2 * np.pi
        u = rho * self.ax * np.cos(theta)
        v = rho * self.by * np.sin(theta)
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.stack([self.cx + u * c - v * s, self.cy + u * s + v * c], axis=1)


def _ripple(c: np.ndarray, s: np.ndarray, ripple) -> np.ndarray:
    """Sum of amp*cos(h*theta + phase) from cos/sin of theta (no arctan2: it is slow)."""
    c2, s2 = c * c, s * s
    harmonics = {
        2: (c2 - s2, 2 * s * c),
        3: (c * (4 * c2 - 3), s * (3 - 4 * s2)),
        5: (c * (16 * c2 * c2 - 20 * c2 + 5), s * (16 * s2 * s2 - 20 * s2 + 5)),
    }
    total = np.zeros_like(c)
    for h, amp, phase in ripple:
        cos_h, sin_h = harmonics[h]
        total += amp * (cos_h * float(np.cos(phase)) - sin_h * float(np.sin(phase)))
    return total


@dataclass
class Scene:
    """The class-free image: base brightness field and the drop's soft mask."""

    size: int  # rows; the frame is square unless ``base`` is wider (the HWI imager's 4:3)
    base: np.ndarray  # float32 brightness before contents, 0..1
    inside: np.ndarray  # float32 soft drop mask, 0..1
    drop: Drop
    level: float  # typical brightness inside the drop
    # How the oil-lit HWI imager shows the contents (:mod:`.hwi`); zero for imagers A and B.
    edge_light: float = 0.0  # edges of what absorbs scatter light into the camera, x level
    dirt_glow: float = 0.0  # dirt on the black surround glows instead of shadowing
    turbidity: float = 0.0  # share of the light fine grains scatter out of the objective (a dimmer drop)


def drop_geometry(drop: Drop, yy: np.ndarray, xx: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: radius relative to the drop's (``rho``), distance to the rippled outline
    (about pixels, negative inside) and the soft drop mask, 0.7 px wide at 256 px."""
    c, s = float(np.cos(drop.angle)), float(np.sin(drop.angle))
    dx, dy = xx - drop.cx, yy - drop.cy
    u = (dx * c + dy * s) / drop.ax
    v = (-dx * s + dy * c) / drop.by
    r = np.sqrt(u * u + v * v) + 1e-6
    rho = r / drop.radius
    outline = 1.0 + _ripple(u / r, v / r, drop.ripple)
    dist = (rho - outline) * drop.radius
    inside = 1.0 / (1.0 + np.exp(np.clip(dist / (0.7 * k), -30, 30)))
    return rho, dist, inside


def draw_scene(rng: np.random.Generator, size: int, imager: Imager = IMAGER_A) -> Scene:
    """The well and drop as ``imager`` photographs them (its ranges; the draws' order is fixed)."""
    yy, xx = pixel_grid(size)
    k = size / 256.0
    # Well: an off-centre bright disc inside a dark rim.
    wcx = size / 2 + rng.normal(0, 0.03 * size)
    wcy = size / 2 + rng.normal(0, 0.03 * size)
    well_r = size * rng.uniform(*imager.well_radius)
    interior = rng.uniform(*imager.interior)
    rim = rng.uniform(*imager.rim)
    vignette = rng.uniform(*imager.vignette)
    dxw, dyw = xx - wcx, yy - wcy
    r_well = np.sqrt(dxw * dxw + dyw * dyw)
    rim_edge = rng.uniform(*imager.rim_edge) * k
    in_well = 1.0 / (1.0 + np.exp(np.clip((r_well - well_r) / rim_edge, -30, 30)))
    base = interior * (1.0 - vignette * (r_well / well_r) ** 2)
    if rng.random() < imager.wall_reflection:  # reflection off the well wall
        wall = np.exp(-(((r_well - well_r + 3 * k) / (1.5 * k)) ** 2))
        base = base + rng.uniform(0.03, 0.12) * wall
    base = rim + (base - rim) * in_well
    # Illumination gradient across the field.
    phi = rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(*imager.tilt)
    gx, gy = float(np.cos(phi)) * tilt / size, float(np.sin(phi)) * tilt / size
    base = base * (1.0 + (xx - size / 2) * gx + (yy - size / 2) * gy)

    # Drop: an ellipse with a rippled outline, anywhere inside the well.
    radius = well_r * rng.uniform(*imager.drop_radius)
    slack = max(well_r - radius, 1.0) * 0.8
    off_r = slack * np.sqrt(rng.random())
    off_t = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.82, 1.2)
    drop = Drop(
        cx=float(wcx + off_r * np.cos(off_t)),
        cy=float(wcy + off_r * np.sin(off_t)),
        radius=float(radius),
        ax=float(np.sqrt(aspect)),
        by=float(1 / np.sqrt(aspect)),
        angle=float(rng.uniform(0, np.pi)),
        ripple=tuple((h, rng.uniform(0, 0.05) / h, rng.uniform(0, 2 * np.pi)) for h in (2, 3, 5)),
    )
    rho, dist, inside = drop_geometry(drop, yy, xx, k)

    # Inside the drop: own brightness, lens shading, and the meniscus band.
    tone = rng.uniform(0.82, 1.12)
    lens = rng.uniform(0.0, 0.25)
    band = rng.uniform(1.5, 6.0) * k * (radius / (0.3 * size)) ** 0.5
    menisc = rng.uniform(0.15, 0.6)
    highlight = rng.uniform(0.0, 0.15)
    rho2 = np.minimum(rho, 1.0) ** 2
    drop_field = tone * (1.0 - lens * rho2 * rho2)
    drop_field = drop_field - menisc * np.exp(-(((dist + band) / band) ** 2))
    drop_field = drop_field + highlight * np.exp(-(((dist + 2.8 * band) / (0.6 * band)) ** 2))
    base = base * (1.0 + (drop_field - 1.0) * inside)
    # Oil over the drop: a faint halo outside the edge.
    base = base * (1.0 - rng.uniform(0.0, 0.12) * np.exp(-((np.maximum(dist, 0) / (4 * band)) ** 2)) * (1 - inside))
    level = float(interior * tone)
    return Scene(size, base.astype(np.float32), inside.astype(np.float32), drop, level)


@dataclass(frozen=True)
class Nuisance:
    """Camera-side variation, kept so difficulty can account for it."""

    blur: float  # Gaussian sigma in pixels at 256 px
    noise: float
    contrast: float
    gamma: float


def draw_nuisance(rng: np.random.Generator, difficulty: float, imager: Imager = IMAGER_A) -> Nuisance:
    blur = rng.uniform(*imager.blur) + (rng.exponential(0.5 + difficulty) if rng.random() < 0.35 else 0.0)
    return Nuisance(
        blur=float(min(blur, 3.0)),
        noise=float(rng.uniform(imager.noise[0], imager.noise[1] + imager.noise_difficulty * difficulty)),
        contrast=float(rng.uniform(*imager.contrast)),
        gamma=float(rng.uniform(*imager.gamma)),
    )


@lru_cache(maxsize=512)
def _gamma_table(gamma: float) -> np.ndarray:
    return (np.linspace(0.0, 1.0, 1024, dtype=np.float64) ** gamma).astype(np.float32)


def defocus(image: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """The camera's focus blur (``nuisance.blur`` is a sigma at 256 px, scaled to the image)."""
    sigma = nuisance.blur * image.shape[0] / 256.0
    return gaussian_filter(image, sigma, truncate=2.5) if sigma > 0.3 else image


def finish(rng: np.random.Generator, image: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Apply focus, contrast and sensor noise, and quantise to 8-bit grey."""
    image = defocus(image, nuisance)
    mean = float(image.mean())
    image = mean + nuisance.contrast * (image - mean)
    np.clip(image, 0.0, 1.0, out=image)
    image = _gamma_table(round(nuisance.gamma, 3))[(image * 1023.0).astype(np.int16)]
    image += rng.standard_normal(image.shape, dtype=np.float32) * nuisance.noise
    np.clip(image, 0.0, 1.0, out=image)
    return (image * 255.0 + 0.5).astype(np.uint8)
