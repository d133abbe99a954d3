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
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class Imager:
    """Ranges (low, high) of uniform draws, one per scene or camera property."""

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

IMAGERS: dict[str, Imager] = {imager.name: imager for imager in (IMAGER_A, IMAGER_B)}
DEFAULT_IMAGER = "A"


def imager_named(name: str) -> Imager:
    """The imager called ``name`` ('A' or 'B'); ValueError naming the choices otherwise."""
    try:
        return IMAGERS[name.upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown imager {name!r}; choose one of {sorted(IMAGERS)}") from None
