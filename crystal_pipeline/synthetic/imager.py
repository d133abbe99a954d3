"""The imagers a synthetic archive can be photographed with: lab A (the default) and lab B.

A model trained on one lab's imager is worse on another's (MARCO's experience; issue 10),
so the demo needs a second lab whose images a lab-A model has not seen. An
:class:`Imager` holds the ranges the class-free scene and the camera nuisances are drawn
from (:mod:`.scene`): illumination (well brightness, vignette, tilt), the well rim,
drop size, contrast and gamma, blur and sensor noise. The contents (crystals,
precipitate, ...) are drawn the same way for every imager, so the classes mean the same
thing in both labs and only their look changes.

Imager A's numbers are exactly the constants the generator used before imagers existed,
drawn in the same order from the same generator, so an archive written with imager A is
byte-identical to one written before (tests/synthetic/test_imager.py hashes one).
Imager B draws the same number of values in the same order, only from other ranges,
and adds a bright reflection on the well wall on every image.

Imager HWI (issue 17) is another kind of camera: the Hauptman-Woodward imager the paper's
images came from, a bright microbatch drop under oil glowing on a near-black surround in
4:3 frames. Its :class:`OilOptics` are drawn once per plate (:mod:`.hwi`), as a real
imager's lighting and geometry are fixed across a plate, and each image jitters a little
around them; its blur, noise, contrast and gamma ranges are per-plate ranges too.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class OilOptics:
    """An HWI-style imager's lighting of a 1536-well microbatch drop under oil.

    Ranges (low, high) drawn once per plate (``hwi.draw_plate_lighting``); brightness in
    0..1 before the camera's gamma and noise. The levels aim at what HWI's photographs
    show: a surround about 20 of 255, a drop centre about 150, the drop about 40% of the
    frame, and a bright rim at its edge.
    """

    aspect: float = 4 / 3  # frame width / height (public HWI samples: 696 x 520)
    surround: Range = (0.065, 0.095)  # the black plate around the lit well
    drop_level: Range = (0.52, 0.62)  # brightness inside the drop
    drop_radius: Range = (0.395, 0.425)  # of the frame height: pi r^2 is ~40% of a 4:3 frame
    rim: Range = (0.22, 0.38)  # the bright ring at the drop's edge, over the drop level
    rim_width: Range = (1.2, 2.6)  # px at 256 rows
    meniscus: Range = (0.0, 0.12)  # a darker band just inside the rim
    lens: Range = (0.0, 0.15)  # drop brighter in the centre than near its edge
    haze: Range = (0.05, 0.14)  # oil-lit glow just outside the drop
    haze_reach: Range = (5.0, 14.0)  # its decay length, px at 256 rows
    haze_texture: Range = (0.1, 0.35)  # low-frequency unevenness of the surround
    wall: Range = (0.02, 0.07)  # the well walls' faint glow, left and right of the drop
    wall_offset: Range = (0.5, 0.58)  # wall distance from the centre, of the frame height
    vignette: Range = (0.0, 0.15)
    tilt: Range = (0.0, 0.12)  # illumination gradient across the frame
    edge_light: Range = (0.8, 1.6)  # edges of crystals, grains, droplets scatter light
    dirt_glow: Range = (0.15, 0.35)  # dust and fibres over the black surround glow
    turbidity: Range = (1.5, 2.5)  # fine grains dim the drop around them: light scattered out of the aperture
    offset: float = 0.02  # the plate's drops off the frame centre, sd of frame height
    jitter: float = 0.02  # per image: drop position (of height), size and brightness (relative)


@dataclass(frozen=True)
class Imager:
    """Ranges (low, high) of uniform draws, one per scene or camera property.

    With ``optics`` set (imager HWI) the scene comes from those optics instead of the
    well fields, and the camera ranges (blur, noise, contrast, gamma) are drawn per plate.
    """

    name: str
    well_radius: Range = (0.43, 0.53)  # fraction of the image side
    interior: Range = (0.55, 0.95)  # brightness inside the well
    rim: Range = (0.03, 0.25)  # brightness of the plastic rim outside it
    rim_edge: Range = (1.5, 4.0)  # softness of the rim edge, px at 256
    vignette: Range = (0.05, 0.35)
    wall_reflection: float = 0.5  # share of images with a bright ring on the well wall
    tilt: Range = (0.0, 0.35)  # illumination gradient across the field
    drop_radius: Range = (0.42, 0.85)  # fraction of the well radius
    blur: Range = (0.0, 0.8)  # Gaussian sigma at 256 px, before the occasional defocus
    noise: Range = (0.004, 0.02)  # sensor noise; the high end grows by noise_difficulty x difficulty
    noise_difficulty: float = 0.03
    contrast: Range = (0.65, 1.2)
    gamma: Range = (0.8, 1.25)
    optics: OilOptics | None = None
    # The screen behind the pictures: None, every plate draws the archive's class mix; a
    # number, each plate's own mix is Dirichlet(concentration x mix) around it
    # (``class_mix.plate_mix``), as in HWI's screen of one protein per 1536-cocktail plate,
    # where a protein that precipitates does so in many wells.
    plate_mix_concentration: float | None = None
    # Rows an archive draws when no --size is given: the size its calibration holds at.
    default_size: int = 256


IMAGER_A = Imager("A")

# Lab B: a dimmer, flatter, softer camera with small drops in a thick, pale rim. Every
# property differs from A, none so far that the contents become invisible.
IMAGER_B = Imager(
    "B",
    well_radius=(0.36, 0.42),
    interior=(0.45, 0.75),
    rim=(0.18, 0.32),
    rim_edge=(4.0, 8.0),
    vignette=(0.25, 0.5),
    wall_reflection=1.0,
    tilt=(0.25, 0.6),
    drop_radius=(0.35, 0.6),
    blur=(0.4, 1.1),
    noise=(0.01, 0.025),
    noise_difficulty=0.03,
    contrast=(0.55, 0.9),
    gamma=(1.05, 1.35),
)

# How far one HWI plate's (one protein's) outcomes stray from the archive's mix: the
# calibrated value (docs/synthetic_archive.md, "Calibrating the twin").
PLATE_MIX_CONCENTRATION = 10.0

# HWI: drop under oil on black, 4:3 frames; a sharper, quieter camera than A's, fixed per plate.
IMAGER_HWI = Imager(
    "HWI",
    blur=(0.25, 0.7),
    noise=(0.006, 0.014),
    noise_difficulty=0.015,
    contrast=(0.92, 1.08),
    gamma=(0.92, 1.08),
    optics=OilOptics(),
    plate_mix_concentration=PLATE_MIX_CONCENTRATION,
    # The paper's working resolution (its 128 px central square is the whole frame's
    # height, so ingest crops without resizing); the twin is calibrated at this size: the
    # generator is not scale-free (grain and noise are per pixel), docs/decisions.md.
    default_size=128,
)

IMAGERS: dict[str, Imager] = {imager.name: imager for imager in (IMAGER_A, IMAGER_B, IMAGER_HWI)}
DEFAULT_IMAGER = "A"
#: The imager ``demo-archive`` and ``make demo`` draw with: HWI, the synthetic twin of the
#: paper's data (issue 17). The library's default stays A, whose bytes tests pin.
DEMO_IMAGER = "HWI"


def imager_named(name: str) -> Imager:
    """The imager called ``name`` ('A', 'B' or 'HWI', any case); ValueError naming the choices otherwise."""
    try:
        return IMAGERS[name.upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown imager {name!r}; choose one of {sorted(IMAGERS)}") from None
