"""Where the drop lies in a picture: its centre and radii, found with classical image analysis.

The paper crops the central square whatever the drop's position; a drop that landed off
centre loses part of itself to that crop. This module finds the drop so the crop can
follow it (``preprocessing.crop: drop``, :func:`crop_box`), with no trained model and no
labels: scikit-image's Otsu threshold, connected components and moment ellipses.

How (on a copy reduced to :data:`WORK_ROWS` rows, so a picture costs tens of milliseconds):

- Two pictures are common: a drop seen through a bright well, whose meniscus is a dark
  ring (imagers A and B, most plate imagers), and a lit drop on a near-black surround (oil
  optics, HWI). Candidates for both: regions a thin dark ring encloses (black top-hat,
  holes filled: "ring"), open dark arcs where the lit side hides part of the ring, snapped
  to the circle they lie on ("arc"), holes of the bright (Otsu) components ("hole"), and
  the bright components with their holes filled ("bright"). When only a bright region (a
  well's disc) or nothing would be taken, rings and arcs are looked for again at a fainter
  least depth (:data:`FAINT_RING_DEPTH`: a dim, flat camera's meniscus).
- Each is made convex (grains and bites at a drop's edge are not part of its outline),
  fitted with its moment ellipse, and kept if it fills that ellipse (:data:`MIN_FIT`), has
  a plausible size (:data:`MIN_AREA` to :data:`MAX_AREA` of the frame), is not elongated
  (:data:`MAX_ELONGATION`) and does not run along the frame's edge (:data:`MAX_BORDER_SHARE`).
- The choice: the sharpest outline (a low quantile of the edge strength round the
  ellipse, so the edge must go most of the way round) times the fit, among enclosed
  candidates whose outline is at least :data:`ENCLOSED_STRENGTH` of the sharpest (a well's
  disc is a bright region around its drop; a grain cloud in a lit drop is not sharp all
  round), else among all. Then inwards (:func:`_nested`): a dark-ringed candidate nested
  in the winner takes its place, since in a well's picture the winner is often the well's
  bright disc, whose rim is sharper than the drop's meniscus (imagers A and B lost about
  one picture in ten to the well that way). A hole that wins while nested in a ringed
  region is a dark cloud in the drop: the ring is taken (:func:`_ring_around_hole`). The
  winner is refitted, pass after pass (:func:`.drop_edge.refit`), to the step of its own polarity
  along rays from its centre (:func:`.drop_edge.refine`): the outer edge of a dark ring where the
  band climbs out of a valley (:func:`.drop_edge.edge_polarity`), else the fall of a lit drop to its dark
  surround.
- An open arc is judged by the circle it lies on (its size, fit), not by its own pixels.
- Nothing qualifies: the central square's inscribed circle is returned with
  ``found=False`` and ``method="fallback"``, and the crop falls back to the paper's
  central square.

Measured against the generator's drops and on real pictures in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from crystal_pipeline.ingest.drop_edge import outline_strength, refine, refit, valley

#: Rows of the reduced copy the drop is looked for on.
WORK_ROWS = 128
#: Smallest and largest region taken for a drop, as a share of the frame's area.
MIN_AREA = 0.02
MAX_AREA = 0.85
#: Least IoU of a region with its moment ellipse for it to count as an elliptical drop.
MIN_FIT = 0.85
#: Largest share of a region's outline that may lie on the frame's edge.
MAX_BORDER_SHARE = 0.1
#: Longest major-to-minor axis ratio of a drop (drops are near round; grain chains are not).
MAX_ELONGATION = 1.6
#: Fewest pixels (share of the frame) of an open dark arc taken as part of a drop's ring.
MIN_ARC = 0.003
#: Most dark-ring components tried per picture (the largest).
MAX_RING_CANDIDATES = 8
#: Radius (px of the reduced copy) of the closing that finds thin dark rings, and the
#: least depth (0..1 of full scale) a ring must have; when no candidate but a bright
#: region (a well's disc) would be taken, rings down to :data:`FAINT_RING_DEPTH` are
#: looked for too (a dim, flat camera: imager B's meniscus is often 0.015-0.03 deep).
RING_REACH = 5
MIN_RING_DEPTH = 0.03
FAINT_RING_DEPTH = 0.015
#: A ring's outline must be this share of the sharpest candidate's to be taken as the drop.
ENCLOSED_STRENGTH = 0.5
#: A drop seen in a well (imagers A, B): the well's disc is itself a sharp, bright, elliptical
#: candidate round the drop, sharper than the drop's faint meniscus, and used to win. A
#: candidate nested in the chosen one (at least :data:`NESTED_INSIDE` of it within, at most
#: :data:`NESTED_MAX_AREA` of its area) whose outline is a dark ring (darker than both of
#: its sides, :func:`.drop_edge.valley`, on all but a quarter of directions) and at least
#: :data:`NESTED_STRENGTH` as sharp is taken instead: the drop in its well. A grain cloud
#: or dark blot in a lit drop (HWI) has a step at its edge, not a ring, and stays out.
NESTED_INSIDE = 0.9
NESTED_MAX_AREA = 0.6
NESTED_STRENGTH = 0.25


@dataclass(frozen=True)
class DropLocation:
    """A drop's ellipse in pixels of the picture it was found in (``angle`` in radians, of
    semi-axis ``a`` from the x axis towards y), and whether it was found or is the fallback."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    width: int
    height: int
    found: bool
    method: str  # "hole" (dark-ringed drop in a bright well), "bright" (lit drop on dark), "fallback"

    @property
    def radius(self) -> float:
        """The larger semi-axis: half the side of the square that holds the drop."""
        return max(self.a, self.b)

    def fractions(self) -> dict:
        """Centre and radii as fractions of the picture's width (x, a, b) and height (y)."""
        return {"drop_x": self.cx / self.width, "drop_y": self.cy / self.height,
                "drop_a": self.a / self.width, "drop_b": self.b / self.width,
                "drop_angle": self.angle, "drop_found": self.found, "drop_method": self.method}

    def as_dict(self) -> dict:
        return asdict(self)


def fallback(width: int, height: int) -> DropLocation:
    """The central square's inscribed circle: what the paper's crop assumes."""
    r = min(width, height) / 2
    return DropLocation(width / 2, height / 2, r, r, 0.0, width, height, False, "fallback")


def _reduced(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """The picture at :data:`WORK_ROWS` rows (box filter), float 0..1, and the scale back."""
    h, w = grey.shape
    scale = h / WORK_ROWS if h > WORK_ROWS else 1.0
    if scale > 1.0:
        size = (max(1, round(w / scale)), WORK_ROWS)
        grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX))
        scale = h / grey.shape[0]
    return grey.astype(np.float32) / 255.0, scale


def _ellipse_of(region: np.ndarray):
    """Moment ellipse of a boolean region: (cx, cy, a, b, angle) in the region's pixels."""
    from skimage.measure import regionprops

    props = regionprops(region.astype(np.uint8))[0]
    cy, cx = props.centroid
    a, b = props.axis_major_length / 2, props.axis_minor_length / 2
    # skimage's orientation: angle from the row axis to the major axis, counter-clockwise.
    angle = float(np.pi / 2 - props.orientation)
    return float(cx), float(cy), float(a), float(b), angle


def _circle_through(region: np.ndarray):
    """Least-squares circle (Kasa's algebraic fit) through a region's pixels, as an ellipse."""
    y, x = np.nonzero(region)
    x, y = x.astype(np.float64), y.astype(np.float64)
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    (p, q, r), *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    cx, cy = p / 2, q / 2
    radius = float(np.sqrt(max(r + cx * cx + cy * cy, 1.0)))
    return float(cx), float(cy), radius, radius, 0.0


def ellipse_mask(shape: tuple[int, int], cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """Pixels whose centres lie inside the ellipse (semi-axes ``a`` along ``angle``, ``b`` across)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / max(a, 1e-6)
    v = (-(xx - cx) * s + (yy - cy) * c) / max(b, 1e-6)
    return u * u + v * v <= 1.0


def _border_share(region: np.ndarray) -> float:
    """Share of the region's pixels on the frame's edge, against its outline's length."""
    edge = np.concatenate([region[0], region[-1], region[:, 0], region[:, -1]])
    perimeter = max(1.0, 2 * np.sqrt(np.pi * region.sum()))
    return float(edge.sum()) / perimeter


def _dark_lines(smooth: np.ndarray, floor: float = MIN_RING_DEPTH) -> np.ndarray:
    """Thin dark structures (a meniscus ring, grain and crystal edges): black top-hat above
    a threshold set by the picture's own spread of it, and at least ``floor``."""
    from scipy.ndimage import grey_closing
    from skimage.morphology import disk

    tophat = grey_closing(smooth, footprint=disk(RING_REACH)) - smooth
    level = float(np.median(tophat)) + 4.0 * float(np.median(np.abs(tophat - np.median(tophat)))) / 0.6745
    return tophat > max(level, floor)


def _candidates(g: np.ndarray, floor: float = MIN_RING_DEPTH, bright: bool = True):
    """(kind, region) pairs: regions a dark ring (at least ``floor`` deep) encloses ("ring"),
    and with ``bright`` holes of bright components ("hole") and bright components with their
    holes filled ("bright")."""
    from scipy.ndimage import binary_closing, binary_fill_holes, gaussian_filter
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import disk

    smooth = gaussian_filter(g, 1.0)
    if float(smooth.max() - smooth.min()) < 1e-3:
        return
    area = g.size
    lines = binary_closing(_dark_lines(smooth, floor), disk(2))
    rings = label(binary_fill_holes(lines), connectivity=1)
    sizes = np.bincount(rings.ravel())[1:]
    for index in np.argsort(-sizes)[:MAX_RING_CANDIDATES] + 1:  # largest first: grains make many small ones
        if sizes[index - 1] < MIN_ARC * area:
            break
        region = rings == index
        if not (region & ~lines).any():
            yield "arc", region  # an open arc: a ring broken where the light hides it
        elif sizes[index - 1] >= MIN_AREA * area:
            yield "ring", region
    if not bright:
        return
    lit = smooth > threshold_otsu(smooth)
    labels = label(lit, connectivity=1)
    for index in np.argsort(-np.bincount(labels.ravel())[1:])[:4] + 1:
        component = labels == index
        if component.sum() < MIN_AREA * area:
            break
        filled = binary_fill_holes(component)
        holes = label(filled & ~component, connectivity=1)
        for hole_index in range(1, int(holes.max()) + 1):
            hole = holes == hole_index
            if hole.sum() >= MIN_AREA * area:
                yield "hole", hole
        yield "bright", filled


def _encloses(outer: np.ndarray, inner: np.ndarray) -> bool:
    """Whether ``inner`` lies nested in ``outer`` (:data:`NESTED_INSIDE` of it within, at
    most :data:`NESTED_MAX_AREA` of its area)."""
    area = inner.sum()
    return bool(area <= NESTED_MAX_AREA * outer.sum() and (inner & outer).sum() >= NESTED_INSIDE * area)


def _nested(kept: list, strengths: list[float], best: int, smooth: np.ndarray) -> int:
    """The candidate to take instead of ``kept[best]``: inwards, while a dark-ringed one lies
    nested in it (:data:`NESTED_INSIDE`, :data:`NESTED_MAX_AREA`, :data:`NESTED_STRENGTH`)."""
    masks = [ellipse_mask(smooth.shape, *c[2]) for c in kept]
    valleys: dict[int, float] = {}
    for _ in range(3):
        inner = []
        for i, mask in enumerate(masks):
            if i == best or kept[i][0] == "bright" or strengths[i] < NESTED_STRENGTH * strengths[best]:
                continue
            if not _encloses(masks[best], mask):
                continue
            if i not in valleys:
                valleys[i] = valley(smooth, kept[i][2])
            if valleys[i] >= 0:
                inner.append(i)
        if not inner:
            break
        best = max(inner, key=lambda i: strengths[i] * kept[i][3])
    return best


def _ring_around_hole(kept: list, strengths: list[float], best: int, shape: tuple[int, int]) -> int:
    """The candidate to take instead of a hole ``kept[best]``: the smallest region a dark
    ring encloses ("ring", "arc") that it lies nested in, if that ring's outline is at least
    :data:`NESTED_STRENGTH` as sharp: a dark region inside a ringed drop is something in the
    drop (a precipitate cloud, a cluster of crystals). Its edge is sharper than the drop's
    faint meniscus and used to win (imager A: about one picture in 50 located on a cloud)."""
    if kept[best][0] != "hole":
        return best
    inner = ellipse_mask(shape, *kept[best][2])
    rings = [(ellipse_mask(shape, *c[2]), i) for i, c in enumerate(kept)
             if c[0] in ("ring", "arc") and strengths[i] >= NESTED_STRENGTH * strengths[best]]
    around = [(mask.sum(), i) for mask, i in rings if _encloses(mask, inner)]
    return min(around)[1] if around else best


def _choose(kept: list, strengths: list[float]):
    """The drop among elliptical candidates: a region a dark ring encloses (a drop in a well)
    when its outline is at least :data:`ENCLOSED_STRENGTH` as sharp as the sharpest
    candidate's (a grain cloud inside a lit drop is not), else the sharpest bright region."""
    top = max(strengths)
    enclosed = [(st * c[3], c) for c, st in zip(kept, strengths)
                if c[0] != "bright" and st >= ENCLOSED_STRENGTH * top]
    pool = enclosed or [(st * c[3], c) for c, st in zip(kept, strengths)]
    return max(pool, key=lambda pair: pair[0])[1]


def _kept(g: np.ndarray, smooth: np.ndarray, floor: float = MIN_RING_DEPTH, bright: bool = True) -> list:
    """The candidates that pass the size, border, elongation and fit tests, as (kind, region,
    ellipse, fit). An open arc is judged by the circle it lies on, not by its own few pixels
    (a thin arc is far below :data:`MIN_AREA` of the frame however large its drop)."""
    from skimage.morphology import convex_hull_image

    kept = []
    for kind, region in _candidates(g, floor, bright):
        share = region.sum() / g.size
        if _border_share(region) > MAX_BORDER_SHARE or (kind != "arc" and not MIN_AREA <= share <= MAX_AREA):
            continue
        if kind == "arc":  # the circle the arc lies on, snapped to the edge
            # The circle through an arc runs along the dark meniscus; the drop's outline is the
            # meniscus's outer edge (dark to the brighter well outside), not its inner one.
            ellipse = refine(smooth, _circle_through(region), polarity=1.0)
            region = ellipse_mask(g.shape, *ellipse)
            if not MIN_AREA <= region.sum() / g.size <= MAX_AREA:
                continue
        else:
            region = convex_hull_image(region)  # a drop is convex: grains and bites at its edge are not
            ellipse = _ellipse_of(region)
        if ellipse[2] > MAX_ELONGATION * max(ellipse[3], 1e-6):
            continue
        fitted = ellipse_mask(g.shape, *ellipse)
        fit = float((fitted & region).sum() / max(1, (fitted | region).sum()))
        if fit >= MIN_FIT:
            kept.append((kind, region, ellipse, fit))
    return kept


def _best(kept: list, gradient: np.ndarray, smooth: np.ndarray):
    """The drop among the kept candidates (:func:`_choose`, :func:`_nested`,
    :func:`_ring_around_hole`), or None."""
    if not kept:
        return None
    strengths = [outline_strength(gradient, c[2]) for c in kept]
    chosen = _choose(kept, strengths)
    best = _nested(kept, strengths, next(i for i, c in enumerate(kept) if c is chosen), smooth)
    return kept[_ring_around_hole(kept, strengths, best, smooth.shape)]


def locate_drop(grey: np.ndarray) -> DropLocation:
    """The drop's ellipse in ``grey`` (2-D uint8, any size), or the central fallback."""
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D grey picture, got shape {grey.shape}")
    height, width = grey.shape
    from scipy.ndimage import gaussian_filter
    from skimage.filters import sobel

    g, scale = _reduced(np.ascontiguousarray(grey, dtype=np.uint8))
    smooth = gaussian_filter(g, 1.0)
    gradient = sobel(smooth)
    kept = _kept(g, smooth)
    best = _best(kept, gradient, smooth)
    if best is None or best[0] == "bright":  # the well's disc, or nothing: a fainter meniscus?
        kept += _kept(g, smooth, FAINT_RING_DEPTH, bright=False)
        best = _best(kept, gradient, smooth)
    if best is None:
        return fallback(width, height)
    kind, _, ellipse, _ = best
    cx, cy, a, b, angle = refit(smooth, ellipse)
    # Pixel centres: reduced pixel i covers [i*scale, (i+1)*scale) of the picture.
    return DropLocation((cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5, a * scale, b * scale,
                        angle, width, height, True, kind)
