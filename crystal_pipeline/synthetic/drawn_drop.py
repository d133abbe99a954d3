"""One synthetic photograph together with the drop ellipse it was drawn around, in memory.

The drop locator (:mod:`crystal_pipeline.ingest.drop_locator`) is measured against the
generator's own drop: :func:`render.render_well` keeps its scene to itself and the archive
writes no geometry here (the geometry truth file belongs to the archive writer), so this
draws a picture the same way (scene, nuisance, contents in ``render``'s order, camera) and
returns the :class:`~crystal_pipeline.synthetic.scene.Drop` with it. Its own stream: the
archive's bytes do not depend on anything drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crystal_pipeline.classes import CLASSES
from crystal_pipeline.ingest.drop_locator import ellipse_mask
from crystal_pipeline.synthetic import contents, hwi, render
from crystal_pipeline.synthetic.imager import Imager
from crystal_pipeline.synthetic.scene import Drop, draw_nuisance, draw_scene, finish


@dataclass(frozen=True)
class DrawnDrop:
    """An 8-bit grey picture and the ellipse of its drop, in pixels of that picture."""

    image: np.ndarray
    drop: Drop

    @property
    def semi_axes(self) -> tuple[float, float]:
        """The ellipse's semi-axes along its own rotated x and y (ripple left out)."""
        return self.drop.radius * self.drop.ax, self.drop.radius * self.drop.by

    def mask(self) -> np.ndarray:
        """The drop ellipse as a boolean mask of the picture (ripple left out)."""
        return ellipse_mask(self.image.shape, self.drop.cx, self.drop.cy, *self.semi_axes, self.drop.angle)


def draw_drop_picture(rng: np.random.Generator, class_id: int, size: int, imager: Imager,
                      difficulty: float = render.DEFAULT_DIFFICULTY) -> DrawnDrop:
    """A picture of class ``class_id`` as ``imager`` takes it (``size`` rows), and its drop."""
    if imager.optics is None:
        scene = draw_scene(rng, size, imager)
        nuisance = draw_nuisance(rng, difficulty, imager)
    else:
        lighting = hwi.draw_plate_lighting(rng, imager)
        scene = hwi.draw_scene(rng, size, lighting)
        nuisance = hwi.draw_nuisance(rng, difficulty, lighting, imager)
    canvas = contents.Canvas(scene)
    attributes = CLASSES[class_id][1]
    for attr in render._ORDER:
        if attr in attributes:
            render._DRAWERS[attr](canvas, rng, render.draw_strength(rng, difficulty))
    return DrawnDrop(finish(rng, canvas.compose(), nuisance), scene.drop)
