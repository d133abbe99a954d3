"""Reading a drop's edge along an ellipse: how sharp its outline is, whether it is a dark ring
or a step, and the ellipse refitted to the edge itself (:mod:`.drop_locator` finds the
candidates and chooses; this module measures and refines one).

Every measure samples the picture along rays from the ellipse's centre, at scales of its
semi-axes (:func:`_rays`), so the outline test, the valley test and the refit read the same
geometry.
"""

from __future__ import annotations

import numpy as np

#: The outline test: how far (share of the radius) either side of an ellipse's outline the
#: edge is looked for, and the quantile over directions that scores it.
OUTLINE_BAND = 0.08
OUTLINE_QUANTILE = 0.25
#: How far (share of the radius) either side of the first ellipse the edge is refitted.
REFINE_BAND = 0.15
#: Most times the chosen ellipse is refitted, each pass from the last (:func:`refit`).
REFINE_PASSES = 5
#: The refit takes the outer edge of a dark ring (the rise outwards) when, on most rays, the
#: band brightens again by this much (0..1 of full scale) beyond its darkest point.
RING_RISE = 0.02


def _rays(ellipse, directions: int, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(directions, len(scale)) x and y of points along rays from ``ellipse``'s centre, each
    at ``scale`` times the ellipse's radius in that direction."""
    cx, cy, a, b, angle = ellipse
    theta = np.linspace(0, 2 * np.pi, directions, endpoint=False)[:, None]
    scale = scale[None, :]
    c, s = np.cos(angle), np.sin(angle)
    u, v = a * scale * np.cos(theta), b * scale * np.sin(theta)
    return cx + u * c - v * s, cy + u * s + v * c


def _sampled(smooth: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``smooth`` at the points (x, y), bilinear, edges repeated; the shape of ``x``."""
    from scipy.ndimage import map_coordinates

    return map_coordinates(smooth, [y.ravel(), x.ravel()], order=1, mode="nearest").reshape(x.shape)


def outline_strength(gradient: np.ndarray, ellipse) -> float:
    """How sharply the picture changes along an ellipse's outline: per direction the largest
    gradient within :data:`OUTLINE_BAND` of the outline, then a low quantile over directions,
    so an edge must run most of the way round (a grain cloud's hull does not)."""
    x, y = _rays(ellipse, 72, np.linspace(1 - OUTLINE_BAND, 1 + OUTLINE_BAND, 9))
    x = np.clip(np.rint(x), 0, gradient.shape[1] - 1).astype(int)
    y = np.clip(np.rint(y), 0, gradient.shape[0] - 1).astype(int)
    return float(np.quantile(gradient[y, x].max(axis=1), OUTLINE_QUANTILE))


def _radial_residuals(points: np.ndarray, model) -> np.ndarray:
    """About each point's distance from a fitted ellipse: its radius relative to the
    ellipse's along the same direction, off by one, times the mean semi-axis."""
    (ex, ey), (ea, eb), theta = model.center, model.axis_lengths, model.theta
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = points[:, 0] - ex, points[:, 1] - ey
    u, v = (dx * c + dy * s) / max(ea, 1e-6), (-dx * s + dy * c) / max(eb, 1e-6)
    return np.abs(np.sqrt(u * u + v * v) - 1.0) * (ea + eb) / 2


def edge_polarity(profile: np.ndarray) -> float:
    """+1 (the rise outwards: the outer edge of a dark ring, a drop's meniscus in a bright
    well) when on most rays the band brightens again beyond its darkest point; -1 (the fall:
    a lit drop, or a well, on black) when the darkest point is the far dark surround."""
    lowest = profile.argmin(axis=1)[:, None]
    beyond = np.where(np.arange(profile.shape[1])[None, :] >= lowest, profile, -np.inf).max(axis=1)
    return 1.0 if float(np.median(beyond - profile.min(axis=1))) > RING_RISE else -1.0


def refine(smooth: np.ndarray, ellipse, polarity: float | None = None):
    """The ellipse refitted to the drop's edge: along rays from the centre, the sharpest step
    of the drop's own polarity (dark ring to bright well, or lit drop to dark surround)
    within :data:`REFINE_BAND` of the outline; an ellipse fitted to those points (least
    squares, then again without the worst third). The first ellipse if the fit strays.
    ``polarity`` +1 takes the rise outwards (a dark ring's outer edge), -1 the fall; by
    default :func:`edge_polarity` says which."""
    from skimage.measure import EllipseModel

    cx, cy, a, b, angle = ellipse
    x, y = _rays(ellipse, 90, np.linspace(1 - REFINE_BAND, 1 + REFINE_BAND, 33))
    profile = _sampled(smooth, x, y)
    if polarity is None:
        polarity = edge_polarity(profile)
    step = polarity * np.diff(profile, axis=1)
    at = np.argmax(step, axis=1)
    rows = np.arange(len(at))
    points = np.stack([(x[rows, at] + x[rows, at + 1]) / 2, (y[rows, at] + y[rows, at + 1]) / 2], axis=1)
    model = EllipseModel.from_estimate(points)
    if not model:
        return ellipse
    residuals = _radial_residuals(points, model)  # skimage's exact residuals solve one problem per point: slow
    keep = residuals <= np.quantile(residuals, 2 / 3)
    model = EllipseModel.from_estimate(points[keep]) if keep.sum() >= 12 else None
    if not model:
        return ellipse
    (ex, ey), (ea, eb), etheta = model.center, model.axis_lengths, model.theta
    ex, ey, ea, eb, etheta = float(ex), float(ey), float(ea), float(eb), float(etheta)
    radius = max(a, b)
    if (np.hypot(ex - cx, ey - cy) > 0.2 * radius or not 0.8 < max(ea, eb) / radius < 1.25
            or min(ea, eb) < 0.5 * min(a, b)):
        return ellipse
    return ex, ey, ea, eb, etheta


def refit(smooth: np.ndarray, ellipse):
    """:func:`refine` again from its own result until the centre and semi-axes move under
    half a pixel, at most :data:`REFINE_PASSES` times: a first ellipse more than the band off
    (an arc's circle through part of a faint ring, a hull pulled by grains or skin) comes up
    to a band nearer each pass."""
    for _ in range(REFINE_PASSES):
        refined = refine(smooth, ellipse)
        moved = max(abs(p - q) for p, q in zip(refined[:4], ellipse[:4]))
        ellipse = refined
        if moved < 0.5:
            break
    return ellipse


def valley(smooth: np.ndarray, ellipse) -> float:
    """How much darker an ellipse's outline is than both its sides: per direction, the lesser
    of the mean inside (75-85% of the radius) and outside (115-125%) less the darkest value
    within 15% of the outline; the quarter quantile over directions. Positive for a dark ring
    all round (a meniscus, a bubble), negative for a step (a well's or a lit drop's edge)."""
    profile = _sampled(smooth, *_rays(ellipse, 72, np.linspace(0.75, 1.25, 21)))
    ring = profile[:, 7:14].min(axis=1)
    sides = np.minimum(profile[:, :4].mean(axis=1), profile[:, -4:].mean(axis=1))
    return float(np.quantile(sides - ring, 0.25))
