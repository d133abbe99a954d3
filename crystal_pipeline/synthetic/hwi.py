"""The HWI imager's scene: a microbatch drop under oil, lit bright on a near-black surround.

The paper's images come from the Hauptman-Woodward Institute's imager of 1536-well
microbatch-under-oil plates: the drop glows (centre about 150 of 255) on a black plate
(about 20), with a bright ring where its edge refracts the light, a haze of oil-lit glow
around it, the faint walls of the square well left and right, in 4:3 frames (696 x 520),
so the paper's central-square crop cuts away the sides. Imagers A and B draw the opposite
(a darker drop in a bright well, square frames; :mod:`.scene`).

A real imager's lighting and geometry are fixed across a plate, so they are drawn once
per plate (:func:`draw_plate_lighting`, from a generator seeded by the archive seed and the
plate alone) and each image only jitters around them: where the drop landed, its size,
a few percent of brightness, and now and then a defocus. The contents (crystals,
precipitate, ...) are the shared layers of :mod:`.contents`; this module only sets how
the oil lighting shows them (``Scene.edge_light``: the edges of whatever absorbs scatter
light into the camera, so crystals are edge-lit and grains speckle bright and dark;
``Scene.dirt_glow``: dust over the black surround glows).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from crystal_pipeline.synthetic.imager import Imager
from crystal_pipeline.synthetic.scene import Drop, Nuisance, Scene, drop_geometry, pixel_grid, smooth_noise

# The third entry of a plate's lighting seed (seed, plate key, PLATE_STREAM): apart from the
# wells' own streams (seed, key, well, 0|1) and the class draw (seed, key, 0xC1A55).
PLATE_STREAM = 0x11647


@dataclass(frozen=True)
class PlateLighting:
    """One plate's lighting and geometry as drawn from ``OilOptics`` and the imager's camera ranges."""

    aspect: float
    surround: float
    drop_level: float
    drop_radius: float  # of the frame height
    rim: float
    rim_width: float
    meniscus: float
    lens: float
    haze: float
    haze_reach: float
    haze_texture: float
    wall: float
    wall_offset: float
    vignette: float
    tilt_x: float  # relative brightness change across the frame width
    tilt_y: float
    edge_light: float
    dirt_glow: float
    turbidity: float
    offset_x: float  # drop centre off the frame centre, of the frame height
    offset_y: float
    jitter: float
    haze_seed: int  # the surround's unevenness is the plate's, the same in every image
    focus: float  # blur sigma at 256 px before the per-image part
    noise: float
    contrast: float
    gamma: float


def frame_width(size: int, imager: Imager) -> int:
    """Frame width for ``size`` rows: ``round(size * aspect)``, 341 for 256 rows at 4:3."""
    return int(round(size * imager.optics.aspect))


def draw_plate_lighting(rng: np.random.Generator, imager: Imager) -> PlateLighting:
    """A plate's lighting: one uniform draw per ``OilOptics`` range, then the camera's."""
    optics = imager.optics
    if optics is None:
        raise ValueError(f"imager {imager.name} has no oil optics")
    drawn = {f.name: float(rng.uniform(*getattr(optics, f.name)))
             for f in fields(optics) if isinstance(getattr(optics, f.name), tuple)}
    tilt = drawn.pop("tilt")
    phi = rng.uniform(0, 2 * np.pi)
    return PlateLighting(
        aspect=optics.aspect, jitter=optics.jitter,
        tilt_x=float(tilt * np.cos(phi)), tilt_y=float(tilt * np.sin(phi)),
        offset_x=float(rng.normal(0, optics.offset)), offset_y=float(rng.normal(0, optics.offset)),
        haze_seed=int(rng.integers(2**31)),
        focus=float(rng.uniform(*imager.blur)), noise=float(rng.uniform(*imager.noise)),
        contrast=float(rng.uniform(*imager.contrast)), gamma=float(rng.uniform(*imager.gamma)),
        **drawn,
    )


def plate_lighting(seed: int, plate_key: int, imager: Imager) -> PlateLighting | None:
    """The lighting of the plate whose seed part is ``plate_key``: the same for all its wells.

    None for an imager without fixed per-plate optics (A, B), whose scene each image draws.
    """
    if imager.optics is None:
        return None
    return draw_plate_lighting(np.random.default_rng([seed, plate_key, PLATE_STREAM]), imager)


def nominal_lighting(imager: Imager) -> PlateLighting:
    """The middle of every range: for a single image drawn without a plate."""
    optics = imager.optics
    middle = lambda pair: (pair[0] + pair[1]) / 2  # noqa: E731
    mid = {f.name: middle(getattr(optics, f.name)) for f in fields(optics) if isinstance(getattr(optics, f.name), tuple)}
    mid.pop("tilt")
    return PlateLighting(aspect=optics.aspect, jitter=optics.jitter, tilt_x=0.0, tilt_y=0.0, offset_x=0.0,
                         offset_y=0.0, haze_seed=0, focus=middle(imager.blur), noise=middle(imager.noise),
                         contrast=middle(imager.contrast), gamma=middle(imager.gamma), **mid)


@lru_cache(maxsize=16)
def _surround_texture(haze_seed: int, height: int, width: int) -> np.ndarray:
    """The plate's low-frequency unevenness of the black surround (read-only, cached per plate)."""
    texture = smooth_noise(np.random.default_rng(haze_seed), height, 5, width)
    texture.setflags(write=False)
    return texture


def draw_scene(rng: np.random.Generator, size: int, light: PlateLighting) -> Scene:
    """The lit drop on the black plate, ``size`` rows by ``round(size * aspect)`` columns."""
    height, width = size, int(round(size * light.aspect))
    yy, xx = pixel_grid(height, width)
    k = size / 256.0
    jitter = light.jitter
    # The drop: where it landed in the well and its size vary a little; it is nearly round.
    aspect = rng.uniform(0.94, 1.06)
    drop = Drop(
        cx=float(width / 2 + (light.offset_x + rng.normal(0, jitter)) * height),
        cy=float(height / 2 + (light.offset_y + rng.normal(0, jitter)) * height),
        radius=float(light.drop_radius * height * (1 + rng.normal(0, jitter))),
        ax=float(np.sqrt(aspect)), by=float(1 / np.sqrt(aspect)), angle=float(rng.uniform(0, np.pi)),
        ripple=tuple((h, rng.uniform(0, 0.02) / h, rng.uniform(0, 2 * np.pi)) for h in (2, 3, 5)),
    )
    rho, dist, inside = drop_geometry(drop, yy, xx, k)
    level = light.drop_level * (1 + rng.normal(0, jitter))
    rim = light.rim * rng.uniform(0.85, 1.15)
    rim_width = light.rim_width * k

    # Outside: black plate, uneven oil haze, a glow hugging the drop, the well walls.
    surround = light.surround * (1.0 + light.haze_texture * _surround_texture(light.haze_seed, height, width))
    outside = np.maximum(dist, 0.0)
    surround = surround + light.haze * np.exp(-outside / (light.haze_reach * k))
    columns = xx[0]  # walls, tilt and vignette vary along one axis each: 1-D, then broadcast
    rows = yy[:, 0:1]
    walls = sum(np.exp(-(((columns - (drop.cx + side * light.wall_offset * height)) / (2.0 * k)) ** 2))
                for side in (-1, 1))
    surround = surround + light.wall * walls
    # Inside: lens shading, the darker meniscus band and the bright rim at the edge.
    rho2 = np.minimum(rho, 1.0) ** 2
    drop_field = level * (1.0 - light.lens * rho2)
    drop_field = drop_field - light.meniscus * np.exp(-(((dist + 4.0 * rim_width) / (2.0 * rim_width)) ** 2))
    drop_field = drop_field + rim * np.exp(-(((dist + rim_width) / rim_width) ** 2))
    base = surround + (drop_field - surround) * inside
    # Illumination across the frame: tilt and vignette, fixed by the plate.
    fx, fy = (columns - width / 2) / width, (rows - height / 2) / height
    base = base * ((1.0 + light.tilt_x * fx + light.tilt_y * fy) * (1.0 - light.vignette * (fx * fx + fy * fy) * 2.0))
    return Scene(size, base.astype(np.float32), inside.astype(np.float32), drop, float(level),
                 edge_light=light.edge_light, dirt_glow=light.dirt_glow, turbidity=light.turbidity)


def draw_nuisance(rng: np.random.Generator, difficulty: float, light: PlateLighting, imager: Imager) -> Nuisance:
    """The plate's camera, plus this image's share: a little focus, sometimes a defocus, more noise when hard."""
    blur = light.focus + rng.uniform(0.0, 0.2) + (rng.exponential(0.4 + difficulty) if rng.random() < 0.2 else 0.0)
    return Nuisance(
        blur=float(min(blur, 3.0)),
        noise=float(light.noise + rng.uniform(0.0, imager.noise_difficulty * difficulty)),
        contrast=float(light.contrast * rng.uniform(0.97, 1.03)),
        gamma=float(light.gamma * rng.uniform(0.98, 1.02)),
    )
