"""Where the generator drew things: the drop ellipse and a box around every crystal.

A model that says *where* the crystal is (issue 20 item 4, :mod:`crystal_pipeline.model.cam`)
needs a truth to be scored against. The generator knows it exactly: every crystal is a
handful of polygons and lines drawn on the crystal layers, and the drop is an ellipse.
The archive writes these as ``synthetic_geometry.csv`` beside ``synthetic_truth.csv``.

Recording must not change a single pixel or random draw (tests pin the archive's bytes),
so :class:`ExtentRecorder` stands between the crystal drawers and their Pillow layers: it
passes every call through unchanged and keeps the extent of the coordinates it saw.

Coordinates are fractions of the written picture: ``x`` of its width, ``y`` of its
height (the HWI imager's frames are 4:3, so the two differ), the picture exactly as it
is written (the archive writes every picture at its drawn size; nothing is resized).
A pixel column ``c`` spans ``[c, c + 1)``, so a box ``[x0, x1)`` covers the pixels
``floor(x0 * width)`` to ``ceil(x1 * width) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The columns of ``synthetic_geometry.csv``. Drop rows also give the ellipse (centre,
#: semi-axes as fractions of the picture *height*, and the rotation of its first axis from
#: the x axis, in degrees, clockwise on the picture); crystal rows leave those empty.
COLUMNS = ("plate_id", "well", "kind", "x0", "y0", "x1", "y1", "cx", "cy", "rx", "ry", "angle_deg")
GEOMETRY_FILE = "synthetic_geometry.csv"
KINDS = ("drop", "crystal")


@dataclass(frozen=True)
class Shape:
    """One drawn object: its box (fractions of the picture) and, for the drop, its ellipse."""

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    ellipse: tuple[float, float, float, float, float] | None = None  # cx, cy, rx, ry (of height), angle_deg

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (fractions of the picture) lies in the box."""
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def row(self, plate_id: str, well: str) -> dict[str, str]:
        cx, cy, rx, ry, angle = (f"{v:.5f}" for v in self.ellipse) if self.ellipse else ("",) * 5
        return {"plate_id": plate_id, "well": well, "kind": self.kind, "x0": f"{self.x0:.5f}",
                "y0": f"{self.y0:.5f}", "x1": f"{self.x1:.5f}", "y1": f"{self.y1:.5f}",
                "cx": cx, "cy": cy, "rx": rx, "ry": ry, "angle_deg": angle}


class ExtentRecorder:
    """Wraps Pillow ``ImageDraw`` layers: draws exactly what is asked and remembers the pixel
    extent of it, until :meth:`take` hands the extent over and starts the next object."""

    def __init__(self) -> None:
        self._lo = [math.inf, math.inf]
        self._hi = [-math.inf, -math.inf]

    def wrap(self, draw) -> "_Recording":
        return _Recording(draw, self)

    def note(self, xy, width: int = 1) -> None:
        reach = (max(int(width), 1) - 1) / 2 + 0.5  # a line's half width, plus half the rasteriser's pixel
        for x, y in xy:
            self._lo[0], self._lo[1] = min(self._lo[0], x - reach), min(self._lo[1], y - reach)
            self._hi[0], self._hi[1] = max(self._hi[0], x + reach), max(self._hi[1], y + reach)

    def take(self) -> tuple[float, float, float, float] | None:
        """``(x0, y0, x1, y1)`` in pixels (pixel ``c`` spans ``[c, c+1)``) of what was drawn since
        the last call, or None if nothing was."""
        if self._lo[0] == math.inf:
            return None
        # Pillow draws coordinate x into pixel round(x), which spans [round(x), round(x) + 1).
        box = (math.floor(self._lo[0] + 0.5), math.floor(self._lo[1] + 0.5), math.floor(self._hi[0] + 0.5) + 1,
               math.floor(self._hi[1] + 0.5) + 1)
        self.__init__()
        return box


class _Recording:
    """The drawing calls the crystal drawers make, passed through and recorded."""

    def __init__(self, draw, recorder: ExtentRecorder) -> None:
        self._draw, self._recorder = draw, recorder

    def polygon(self, xy, fill=None, outline=None, width: int = 1) -> None:
        self._recorder.note(xy, width)
        self._draw.polygon(xy, fill=fill, outline=outline, width=width)

    def line(self, xy, fill=None, width: int = 1) -> None:
        self._recorder.note(xy, width)
        self._draw.line(xy, fill=fill, width=width)


def box_shape(kind: str, box_px: tuple[float, float, float, float], width: int, height: int) -> Shape:
    """A pixel box as fractions of a ``width`` x ``height`` picture, clipped to the picture."""
    x0, y0, x1, y1 = box_px
    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return Shape(kind, clip(x0 / width), clip(y0 / height), clip(x1 / width), clip(y1 / height))


def crystal_shapes(boxes_px, width: int, height: int) -> tuple[Shape, ...]:
    """The crystals' boxes as fractions, leaving out those drawn wholly off the picture (a shower's
    stray microcrystal): nothing of them is in it."""
    shapes = (box_shape("crystal", box, width, height) for box in boxes_px if box is not None)
    return tuple(s for s in shapes if s.x1 > s.x0 and s.y1 > s.y0)


def drop_shape(drop, width: int, height: int) -> Shape:
    """The drop's ellipse (``scene.Drop``, boundary ripple left out) and the box around it.

    Pixel centres sit at ``i + 0.5`` in these fractions, while the scene draws pixel ``i``
    at coordinate ``i``: half a pixel is added to the centre."""
    a, b = drop.radius * drop.ax, drop.radius * drop.by
    c, s = math.cos(drop.angle), math.sin(drop.angle)
    half_w, half_h = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    cx, cy = drop.cx + 0.5, drop.cy + 0.5
    box = box_shape("drop", (cx - half_w, cy - half_h, cx + half_w, cy + half_h), width, height)
    return Shape("drop", box.x0, box.y0, box.x1, box.y1,
                 (cx / width, cy / height, a / height, b / height, math.degrees(drop.angle)))
