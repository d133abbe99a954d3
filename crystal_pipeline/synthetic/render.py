"""One synthetic drop photograph of a given class, and how hard it is to label.

The class decides only which contents are drawn; how obvious each one is (its
strength) is drawn from a distribution that the ``difficulty`` knob shifts towards
the faint end. The returned ``WellTruth`` says how visible each present attribute
ended up (after blur and hiding behind other contents) and which absent attributes
the image falsely suggests (decoys); annotators are simulated from exactly these.
Crystals, the attribute every figure turns on, take their visibility from the pixels
(:func:`crystal_visibility`), so no expert agrees on a crystal the photograph does not show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crystal_pipeline.classes import CLASSES
from crystal_pipeline.synthetic import contents, geometry, hwi, uv
from crystal_pipeline.synthetic.blur import gaussian_filter
from crystal_pipeline.synthetic.imager import IMAGER_A, Imager
from crystal_pipeline.synthetic.scene import Nuisance, defocus, draw_nuisance, draw_scene, finish

DEFAULT_DIFFICULTY = 0.5

_DRAWERS = {
    "precipitate": contents.precipitate,
    "crystal": contents.crystals,
    "phase_separation": contents.phase_droplets,
    "skin": contents.skin,
    "junk": contents.junk,
}
# Drawing order: what lies on top is drawn last.
_ORDER = ("skin", "precipitate", "phase_separation", "crystal", "junk")


@dataclass(frozen=True)
class WellTruth:
    """The latent truth behind one image: its class and how ambiguous it looks."""

    class_id: int
    difficulty: float  # 0 = unmistakable, 1 = experts cannot tell
    visibility: dict[str, float] = field(default_factory=dict)  # present attributes
    decoys: dict[str, float] = field(default_factory=dict)  # absent attributes it suggests
    salt: float = 0.0  # salt crystals drawn (0 none .. 1 many; only when UV is drawn): not a crystal label
    # Where the drop and each (protein) crystal were drawn, as fractions of the picture (synthetic.geometry).
    geometry: tuple[geometry.Shape, ...] = ()


def draw_strength(rng: np.random.Generator, difficulty: float) -> float:
    """How obvious one feature is; higher difficulty moves mass to faint features."""
    a = 3.0 * (1.0 - difficulty) + 0.8
    b = 1.2 + 1.6 * difficulty
    return float(np.clip(rng.beta(a, b), 0.03, 1.0))


# How far a crystal's pixels must stand out: above this much plus three times the sensor
# noise plus ``CLUTTER_WEIGHT`` local standard deviations of the picture without the crystals.
EDGE_CONTRAST = 0.06
CLUTTER_WEIGHT = 1.5


def crystal_visibility(composed: np.ndarray, hidden: np.ndarray, nuisance: Nuisance) -> float:
    """How visible the crystals are in the photograph, 0..1, from its pixels.

    ``composed`` and ``hidden`` are the scene with and without the crystal layers, before
    the camera. Both go through the camera's blur and contrast; a pixel shows crystal when
    the crystals change it by more than the noise and the local texture of everything else
    (a glint among dense grains does not stand out; one in a clear drop does). The count of
    such pixels is read as an edge length at 256 px and mapped as the size-based estimate
    in ``contents.crystals`` maps its crystal length.
    """
    k = composed.shape[0] / 256.0
    seen, rest = (defocus(image, nuisance) * nuisance.contrast for image in (composed, hidden))
    mean = gaussian_filter(rest, 2 * k)
    clutter = np.sqrt(np.maximum(gaussian_filter(rest * rest, 2 * k) - mean * mean, 0.0))
    stands_out = np.abs(seen - rest) > EDGE_CONTRAST + 3 * nuisance.noise + CLUTTER_WEIGHT * clutter
    length = np.sqrt(np.count_nonzero(stands_out)) / k
    return float(np.clip((length - 2.0) / 25.0, 0, 1) ** 0.6)


def render_well(
    rng: np.random.Generator, class_id: int, size: int = 256, difficulty: float = DEFAULT_DIFFICULTY,
    imager: Imager = IMAGER_A, lighting: hwi.PlateLighting | None = None,
) -> tuple[np.ndarray, WellTruth]:
    """An 8-bit grey image of class ``class_id``, as ``imager`` takes it, and its truth.

    ``size`` rows; square for imagers A and B, ``round(size * 4/3)`` wide for HWI, whose
    plate's ``lighting`` (``hwi.plate_lighting``; the middle of its ranges when None) is
    the same for every well of a plate.
    """
    image, truth, _ = _render(rng, class_id, size, difficulty, imager, lighting, None)
    return image, truth


def render_well_uv(
    rng: np.random.Generator, uv_rng: np.random.Generator, class_id: int, size: int = 256,
    difficulty: float = DEFAULT_DIFFICULTY, imager: Imager = IMAGER_A, lighting: hwi.PlateLighting | None = None,
) -> tuple[np.ndarray, np.ndarray, WellTruth]:
    """The visible picture, the UV picture of the same drop (:mod:`.uv`) and the truth.

    Everything :func:`render_well` draws comes from ``rng`` exactly as there; what UV adds
    (salt crystals, seen in white light too, and the UV camera's noise) comes from
    ``uv_rng`` alone, so without UV an archive's bytes are what they were."""
    return _render(rng, class_id, size, difficulty, imager, lighting, uv_rng)


def _render(rng, class_id, size, difficulty, imager, lighting, uv_rng):
    attributes = CLASSES[class_id][1]
    if imager.optics is None:
        scene = draw_scene(rng, size, imager)
        nuisance = draw_nuisance(rng, difficulty, imager)
    else:
        lighting = lighting or hwi.nominal_lighting(imager)
        scene = hwi.draw_scene(rng, size, lighting)
        nuisance = hwi.draw_nuisance(rng, difficulty, lighting, imager)
    canvas = contents.Canvas(scene)
    strengths: dict[str, float] = {}
    evidence: dict[str, float] = {}
    decoys: dict[str, float] = {}
    for attr in _ORDER:
        if attr not in attributes:
            continue
        strengths[attr] = draw_strength(rng, difficulty)
        for key, value in _DRAWERS[attr](canvas, rng, strengths[attr]).items():
            if key.startswith("decoy_"):
                name = key[6:]
                decoys[name] = max(decoys.get(name, 0.0), value)
            else:
                evidence[key] = value
    if "junk" not in attributes and rng.random() < 0.15 + 0.3 * difficulty:
        for key, value in contents.stray_dust(canvas, rng, rng.random()).items():
            decoys[key[6:]] = max(decoys.get(key[6:], 0.0), value)
    if "precipitate" not in attributes and rng.random() < 0.2 + 0.3 * difficulty:
        for key, value in contents.stray_grains(canvas, rng, rng.random()).items():
            decoys[key[6:]] = max(decoys.get(key[6:], 0.0), value)
    salt = 0.0 if uv_rng is None else uv.draw_salt(canvas, uv_rng)
    composed = canvas.compose()
    if "crystal" in evidence:
        # Crystals are what the annotators are asked about, so their visibility comes from
        # the pixels: what the crystal layers change in the photograph, against the clutter
        # the other contents leave there (microcrystals in precipitate, among oil droplets).
        hidden = canvas.compose(without=contents.CRYSTAL_LAYERS)
        evidence["crystal"] = min(evidence["crystal"], crystal_visibility(composed, hidden, nuisance))
    image = finish(rng, composed, nuisance)

    # Hiding: a faint skin under grains.
    if "skin" in evidence and "precipitate" in strengths:
        evidence["skin"] *= 1.0 - 0.5 * strengths["precipitate"]
    blur = min(nuisance.blur / 2.5, 1.0)
    visibility = {a: float(np.clip(v * (1.0 - 0.45 * blur * (1.0 - v)) * (0.75 + 0.25 * min(nuisance.contrast, 1.0)), 0, 1))
                  for a, v in evidence.items()}
    decoys = {a: float(v) for a, v in decoys.items() if a not in attributes}
    hardest = 1.0 - min(visibility.values(), default=1.0)
    difficulty_here = max(hardest, 0.8 * max(decoys.values(), default=0.0), 0.25 * blur)
    height, width = image.shape
    shapes = (geometry.drop_shape(scene.drop, width, height),
              *geometry.crystal_shapes(canvas.crystal_boxes, width, height))
    truth = WellTruth(class_id, float(np.clip(difficulty_here, 0, 1)), visibility, decoys, float(salt), shapes)
    if uv_rng is None:
        return image, truth, None
    return image, uv.render_uv(canvas, uv_rng, nuisance), truth
