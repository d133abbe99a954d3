"""What grows in a drop: precipitate, crystals, oil droplets, skin, and junk.

Each drawing function takes a ``strength`` in (0, 1] (how obvious the feature is:
dense or faint precipitate, big or micro crystals, ...) and returns the evidence it
left, which ``render`` turns into how visible each attribute is to an annotator. The
same strength drives the pixels and the annotators' trouble, so images that experts
disagree on are the ones that actually look ambiguous. Crystals draw on their own layers,
push the precipitate aside where they lie, and are measured in the finished picture
(``render.crystal_visibility``).

Shapes are drawn with Pillow's C rasteriser on 8-bit layers (absorption and glare),
point clouds with ``np.bincount``; the only full-image float work is a handful of
element-wise passes, which keeps one 256 px image at a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from crystal_pipeline.synthetic.blur import gaussian_filter
from crystal_pipeline.synthetic.geometry import ExtentRecorder
from crystal_pipeline.synthetic.scene import Scene, pixel_grid, smooth_noise


# The layers only crystals draw on, so the picture can be composed without them.
CRYSTAL_LAYERS = ("crystal_dark", "crystal_glare")
# Share of the precipitate's (and skin's) absorption a crystal's body pushes aside.
CRYSTAL_DISPLACES = 0.85
# Imager HWI's oil lighting (issue 17, docs/synthetic_archive.md): the scale (px at 256
# rows) at which absorption is resolved before its edges light up, so grains finer than the
# optics make no halo, and how far (px at 256 rows) fine grains dim the drop around them.
EDGE_SCALE = 1.0
TURBID_REACH = 6.0


class Canvas:
    """Absorption and glare layers over a scene; only the drop layers are masked."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.size = scene.size  # rows: every length scales with it (``k``)
        self.height, self.width = scene.base.shape
        self.k = scene.size / 256.0
        self.absorb = np.zeros((self.height, self.width), np.float32)  # inside the drop
        # Pixel boxes (x0, y0, x1, y1) of the crystals drawn, one per crystal: the geometry truth.
        self.crystal_boxes: list[tuple[int, int, int, int]] = []
        self._layers: dict[str, tuple[Image.Image, ImageDraw.ImageDraw]] = {}

    def layer(self, name: str) -> ImageDraw.ImageDraw:
        """8-bit drawing layers: ``dark``/``glare`` (and the crystals' own pair) inside the drop, ``dirt`` anywhere."""
        if name not in self._layers:
            img = Image.new("L", (self.width, self.height), 0)
            self._layers[name] = (img, ImageDraw.Draw(img))
        return self._layers[name][1]

    def _array(self, name: str) -> np.ndarray | float:
        if name not in self._layers:
            return 0.0
        return np.asarray(self._layers[name][0], dtype=np.float32) * (1 / 255.0)

    def compose(self, without: tuple[str, ...] = ()) -> np.ndarray:
        """The image; ``without`` names layers to leave out (the crystals', to see what they add).

        Under imager HWI's oil lighting (``scene.edge_light``, ``scene.dirt_glow``; zero for A
        and B, whose pictures are composed exactly as before) the edges of what absorbs light
        up and dirt over the black surround glows.
        """
        inside = self.scene.inside
        layer = lambda name: 0.0 if name in without else self._array(name)  # noqa: E731
        dark_crystal, glare_crystal = (layer(name) for name in CRYSTAL_LAYERS)
        grains = self.absorb
        if not isinstance(dark_crystal, float):
            # A crystal is solid: the precipitate and film around it do not lie inside it, so
            # it shows as a faceted window in a grainy drop (as on real plates), not under it.
            grains = grains * np.where(dark_crystal > 0, 1.0 - CRYSTAL_DISPLACES, 1.0).astype(np.float32)
        if self.scene.turbidity:  # grains too fine to resolve still dim the drop around them
            grains = grains + self.scene.turbidity * gaussian_filter(grains, TURBID_REACH * self.k)
        absorb = np.clip(grains + self._array("dark") + dark_crystal, 0.0, 0.97)
        if self.scene.edge_light:  # oil lighting (imager HWI): edges of what absorbs scatter light
            # A gradient per physical length (x k), so the halo does not grow as the size shrinks.
            resolved = gaussian_filter(absorb, EDGE_SCALE * self.k)
            edges = _edges(resolved) * (self.scene.edge_light * self.scene.level * self.k)
        absorb = absorb * inside
        glare = self._array("glare") + glare_crystal
        image = self.scene.base * (1.0 - absorb)
        if self.scene.edge_light:
            image = image + edges * inside
        if not isinstance(glare, float):
            image = image + 0.6 * glare * inside * self.scene.level
        dirt = self._array("dirt")
        if not isinstance(dirt, float):
            image = image * (1.0 - np.clip(dirt, 0.0, 0.97))
            if self.scene.dirt_glow:  # on the black surround dust catches the light instead
                image = image + self.scene.dirt_glow * dirt * (1.0 - inside)
        glint = self._array("glint")
        if not isinstance(glint, float):
            image = image + 0.5 * glint
        return image.astype(np.float32)


def _edges(absorb: np.ndarray) -> np.ndarray:
    """Gradient magnitude by central differences (0 on the frame's edge): a bright halo on
    both sides of every outline and grain, the way oil-lit edges scatter light."""
    gx = np.zeros_like(absorb)
    gy = np.zeros_like(absorb)
    gx[:, 1:-1] = absorb[:, 2:] - absorb[:, :-2]
    gy[1:-1, :] = absorb[2:, :] - absorb[:-2, :]
    return np.sqrt(gx * gx + gy * gy) * 0.5


def _shade(value: float) -> int:
    return int(min(max(value, 0.0), 255.0))


# --- precipitate -----------------------------------------------------------------


def precipitate(canvas: Canvas, rng: np.random.Generator, strength: float) -> dict[str, float]:
    """Granular precipitate from a light dusting to heavy dark clumps."""
    height, width, k, drop = canvas.height, canvas.width, canvas.k, canvas.scene.drop
    area = np.pi * drop.radius**2
    density = 0.004 + 0.35 * strength**1.6  # particles per pixel
    n = int(area * density)
    if rng.random() < 0.35:  # amorphous clumps around a few centres
        centres = drop.sample_points(rng, int(rng.integers(2, 9)), reach=0.75)
        spread = drop.radius * rng.uniform(0.05, 0.25)
        pick = rng.integers(0, len(centres), n)
        pts = centres[pick] + rng.normal(0, spread, (n, 2))
        pts = np.concatenate([pts, drop.sample_points(rng, n // 3, reach=0.95)])
        clumped = 1.0
    else:
        pts = drop.sample_points(rng, n, reach=0.97)
        clumped = 0.0
    ix = np.clip(pts[:, 0].astype(np.int32), 0, width - 1)
    iy = np.clip(pts[:, 1].astype(np.int32), 0, height - 1)
    weight = rng.uniform(0.2, 1.0, len(ix)).astype(np.float32)
    grains = np.bincount(iy * width + ix, weights=weight, minlength=height * width).reshape(height, width)
    grain = rng.uniform(0.5, 1.3) * k
    grains = gaussian_filter(grains.astype(np.float32), grain, truncate=2.0)
    darkness = rng.uniform(0.6, 1.6) * (0.5 + strength)
    canvas.absorb += np.minimum(grains * darkness * (1.0 + 2 * grain), 0.9)
    if strength > 0.45 or clumped:
        cloud = np.maximum(smooth_noise(rng, height, int(rng.integers(4, 9)), width), 0)
        canvas.absorb += cloud * rng.uniform(0.05, 0.35) * strength
    # Fine bright grains read as microcrystals to some experts.
    crystal_decoy = strength * (1.0 - strength) * 2.0 * (1.2 - grain / k) if rng.random() < 0.6 else 0.0
    return {"precipitate": float(strength), "decoy_crystal": float(np.clip(crystal_decoy, 0, 1))}


# --- crystals ----------------------------------------------------------------------


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _needle(draw, glare, x, y, length, angle, contrast, rng):
    width = max(length * rng.uniform(0.05, 0.14), 1.0)
    body = np.array([[-length / 2, 0], [-length / 2 + width, -width / 2], [length / 2 - width, -width / 2],
                     [length / 2, 0], [length / 2 - width, width / 2], [-length / 2 + width, width / 2]])
    pts = _rot(body, angle) + (x, y)
    draw.polygon([tuple(p) for p in pts], fill=_shade(90 * contrast), outline=_shade(200 * contrast))
    edge = _rot(np.array([[-length / 2 + width, -width / 2 - 0.7], [length / 2 - width, -width / 2 - 0.7]]), angle) + (x, y)
    glare.line([tuple(p) for p in edge], fill=_shade(200 * contrast), width=1)


def _plate(draw, glare, x, y, length, angle, contrast, rng):
    sides = int(rng.choice([4, 4, 6]))
    stretch = rng.uniform(0.5, 1.0)
    t = np.arange(sides) * 2 * np.pi / sides + (np.pi / 4 if sides == 4 else 0)
    body = np.stack([np.cos(t) * length / 2, np.sin(t) * length / 2 * stretch], axis=1)
    pts = _rot(body, angle) + (x, y)
    draw.polygon([tuple(p) for p in pts], fill=_shade(35 * contrast), outline=_shade(210 * contrast))
    if length > 8 * contrast:
        inner = pts * 0.55 + np.array([x, y]) * 0.45 + rng.normal(0, length * 0.04, 2)
        for a, b in zip(inner, pts):
            draw.line([tuple(a), tuple(b)], fill=_shade(110 * contrast), width=1)
        glare.polygon([tuple(p) for p in inner], fill=_shade(110 * contrast))
    i = int(rng.integers(sides))
    glare.line([tuple(pts[i]), tuple(pts[(i + 1) % sides])], fill=_shade(230 * contrast), width=1)


def _cube(draw, glare, x, y, length, angle, contrast, rng):
    h = length / 2
    front = _rot(np.array([[-h, -h], [h, -h], [h, h], [-h, h]]) * (1, rng.uniform(0.7, 1.0)), angle) + (x, y)
    depth = _rot(np.array([[length * rng.uniform(0.2, 0.45), -length * rng.uniform(0.2, 0.45)]]), angle)[0]
    top = np.array([front[0], front[1], front[1] + depth, front[0] + depth])
    side = np.array([front[1], front[2], front[2] + depth, front[1] + depth])
    for face, shade in ((side, 120), (top, 20), (front, 60)):
        draw.polygon([tuple(p) for p in face], fill=_shade(shade * contrast), outline=_shade(215 * contrast))
    glare.polygon([tuple(p) for p in top], fill=_shade(150 * contrast))
    glare.line([tuple(front[0]), tuple(front[1])], fill=_shade(240 * contrast), width=1)


_HABITS = {"needle": _needle, "plate": _plate, "cube": _cube}


def crystals(canvas: Canvas, rng: np.random.Generator, strength: float) -> dict[str, float]:
    """Faceted crystals: a few big ones, many small ones, or a shower of microcrystals."""
    k, drop = canvas.k, canvas.scene.drop
    extent = ExtentRecorder()  # passes every call through; keeps each crystal's box (synthetic.geometry)
    draw, glare = extent.wrap(canvas.layer("crystal_dark")), extent.wrap(canvas.layer("crystal_glare"))
    contrast = rng.uniform(0.55, 1.1) * (0.6 + 0.4 * strength)
    length = k * (2.5 + 55.0 * strength**1.4)  # px at this size: near-invisible to large
    habit = str(rng.choice(["needle", "plate", "cube", "plate", "cube"]))
    shower = strength < 0.45 and rng.random() < 0.3
    count = int(rng.integers(25, 120)) if shower else int(np.clip(rng.geometric(0.25 + 0.35 * strength), 1, 12))
    if shower:
        centres = drop.sample_points(rng, int(rng.integers(1, 4)), reach=0.7)
        pts = centres[rng.integers(0, len(centres), count)] + rng.normal(0, drop.radius * rng.uniform(0.1, 0.4), (count, 2))
    else:
        pts = drop.sample_points(rng, count, reach=max(0.3, 0.85 - length / drop.radius))
    urchin = habit == "needle" and not shower and rng.random() < 0.4
    for j, (x, y) in enumerate(pts):
        scale = length * rng.uniform(0.5, 1.2) * (rng.uniform(0.3, 0.8) if shower else 1.0)
        scale = max(scale, 1.5 * k)
        angle = rng.uniform(0, np.pi)
        if urchin:  # needles radiating from one nucleus
            x, y = pts[0]
            x, y = x + np.cos(angle) * scale / 2, y + np.sin(angle) * scale / 2
        _HABITS[habit](draw, glare, x, y, scale, angle, contrast, rng)
        canvas.crystal_boxes.append(extent.take())
    visible = np.clip((length / k - 2.0) / 25.0, 0, 1) ** 0.6 * min(contrast, 1.0) * (1.15 if shower else 1.0)
    return {"crystal": float(np.clip(visible, 0, 1)), "decoy_precipitate": float(shower) * (1 - strength)}


# --- phase separation -----------------------------------------------------------------


def phase_droplets(canvas: Canvas, rng: np.random.Generator, strength: float) -> dict[str, float]:
    """Round oily droplets with dark rims and bright centres, many sizes."""
    k, drop = canvas.k, canvas.scene.drop
    draw, glare = canvas.layer("dark"), canvas.layer("glare")
    typical = k * (1.2 + 14.0 * strength**1.5)
    count = int(np.clip(rng.lognormal(np.log(12 + 150 * (1 - strength) ** 2), 0.5), 3, 400))
    radii = typical * rng.lognormal(0.0, 0.45, count)
    if strength > 0.5 and rng.random() < 0.4:  # coalesced into a few big lenses
        radii[: int(rng.integers(1, 4))] = drop.radius * rng.uniform(0.15, 0.35)
    pts = drop.sample_points(rng, count, reach=0.9)
    rim = rng.uniform(140, 220)
    for (x, y), r in zip(pts, radii):
        w = max(1, int(r * rng.uniform(0.1, 0.2)))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_shade(rng.uniform(5, 35)), outline=_shade(rim), width=w)
        if r > 2.0 * k:
            hr = r * 0.35
            hx, hy = x - r * 0.2, y - r * 0.2
            glare.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=_shade(rng.uniform(60, 140)))
    visible = np.clip((typical / k - 0.8) / 6.0, 0, 1) ** 0.7
    return {"phase_separation": float(visible), "decoy_precipitate": float(np.clip(1.0 - visible, 0, 1)) * 0.8}


# --- skin ------------------------------------------------------------------------


def skin(canvas: Canvas, rng: np.random.Generator, strength: float) -> dict[str, float]:
    """A wrinkled protein film: folded lines over part or all of the drop surface."""
    height, width, k, drop = canvas.height, canvas.width, canvas.k, canvas.scene.drop
    yy, xx = pixel_grid(height, width)
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(0.25, 0.6) / k
    warp = smooth_noise(rng, height, int(rng.integers(3, 7)), width) * rng.uniform(4, 12)
    phase = freq * (xx * np.cos(theta) + yy * np.sin(theta)) + warp
    lines = (1.0 - np.abs(np.sin(phase))) ** rng.uniform(3, 8)
    patch = np.clip(smooth_noise(rng, height, 3, width) * 1.5 + rng.uniform(-0.2, 1.2), 0, 1)
    amplitude = 0.1 + 0.7 * strength
    canvas.absorb += lines * patch * amplitude + patch * amplitude * rng.uniform(0.05, 0.25)
    # The film's folded edge.
    edge = np.abs(phase / freq - rng.uniform(-0.4, 0.4) * drop.radius - (drop.cx * np.cos(theta) + drop.cy * np.sin(theta)))
    canvas.absorb += np.exp(-((edge / (1.5 * k)) ** 2)) * amplitude * rng.uniform(0.3, 1.0) * (rng.random() < 0.5)
    visible = np.clip(amplitude * float(patch.mean()) * 3.0, 0, 1)
    return {"skin": float(visible), "decoy_precipitate": float(np.clip(0.6 - visible, 0, 0.6))}


# --- junk and dust ----------------------------------------------------------------------


def _fibre(draw, rng, canvas):
    size, k = canvas.size, canvas.k
    x, y = rng.uniform(0, (canvas.width, canvas.height))
    angle = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(12, 40))
    step = size * rng.uniform(0.15, 0.6) / steps
    pts = [(x, y)]
    for _ in range(steps):
        angle += rng.normal(0, 0.15)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        pts.append((x, y))
    draw.line(pts, fill=_shade(rng.uniform(120, 230)), width=max(1, int(rng.uniform(1, 3) * k)))


def _anywhere(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """A point in the frame's central 80% (x, y): where dust on the seal shows."""
    return rng.uniform((0.1 * canvas.width, 0.1 * canvas.height), (0.9 * canvas.width, 0.9 * canvas.height))


def _speck(draw, rng, x, y, r, shade):
    draw.ellipse([x - r, y - r * rng.uniform(0.6, 1.0), x + r, y + r], fill=_shade(shade))


def _debris(draw, rng, x, y, r):
    n = int(rng.integers(5, 10))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.4, 1.0, n)
    draw.polygon([(x + a * np.cos(b), y + a * np.sin(b)) for a, b in zip(radii, t)], fill=_shade(rng.uniform(120, 240)))


def _bubble(draw, glint, rng, x, y, r, k):
    w = max(2, int(r * rng.uniform(0.12, 0.25)))
    draw.ellipse([x - r, y - r, x + r, y + r], outline=_shade(rng.uniform(170, 240)), width=w)
    hr = r * 0.5
    glint.ellipse([x - hr, y - hr, x + hr, y + hr], fill=_shade(rng.uniform(30, 90)))


def junk(canvas: Canvas, rng: np.random.Generator, strength: float) -> dict[str, float]:
    """Fibres, dust, debris and air bubbles: things that are not the experiment."""
    k, drop = canvas.k, canvas.scene.drop
    draw = canvas.layer("dirt")
    kinds = rng.choice(["fibre", "dust", "debris", "bubble"], size=int(rng.integers(1, 3)), replace=False)
    for kind in kinds:
        if kind == "fibre":
            for _ in range(int(rng.integers(1, 4))):
                _fibre(draw, rng, canvas)
        elif kind == "dust":
            for _ in range(int(rng.integers(5, 40))):
                x, y = _anywhere(canvas, rng)
                _speck(draw, rng, x, y, k * rng.uniform(0.7, 1.5 + 3.0 * strength), rng.uniform(100, 230))
        elif kind == "debris":
            for (x, y) in drop.sample_points(rng, int(rng.integers(1, 5)), reach=1.1):
                _debris(draw, rng, x, y, k * rng.uniform(3, 6 + 14 * strength))
        else:
            glint = canvas.layer("glint")
            for (x, y) in drop.sample_points(rng, int(rng.integers(1, 4)), reach=0.8):
                _bubble(draw, glint, rng, x, y, k * rng.uniform(6, 10 + 25 * strength), k)
    visible = 0.35 + 0.65 * strength
    decoys = {"junk": float(visible)}
    if "bubble" in kinds:
        decoys["decoy_phase_separation"] = 0.5 * (1 - strength)
    if "dust" in kinds:
        decoys["decoy_precipitate"] = 0.4 * (1 - strength)
    return decoys


def stray_dust(canvas: Canvas, rng: np.random.Generator, amount: float) -> dict[str, float]:
    """A few specks that real plates carry whatever their class: junk's confound."""
    k = canvas.k
    draw = canvas.layer("dirt")
    count = int(rng.integers(1, 2 + int(6 * amount)))
    for _ in range(count):
        x, y = _anywhere(canvas, rng)
        _speck(draw, rng, x, y, k * rng.uniform(0.6, 1.5 + 2 * amount), rng.uniform(80, 200))
    if rng.random() < 0.15 * amount:
        _fibre(draw, rng, canvas)
        return {"decoy_junk": 0.6 * amount}
    return {"decoy_junk": 0.2 * amount}


def stray_grains(canvas: Canvas, rng: np.random.Generator, amount: float) -> dict[str, float]:
    """A sprinkle of particles in a drop that is not precipitating: is it clear or not?

    Light precipitate against clear is the commonest disagreement between experts;
    this draws the 'clear' side of that boundary.
    """
    height, width, drop = canvas.height, canvas.width, canvas.scene.drop
    n = int((20 + 400 * amount) * (drop.radius / (0.3 * canvas.size)) ** 2)
    pts = drop.sample_points(rng, n, reach=0.95)
    ix = np.clip(pts[:, 0].astype(np.int32), 0, width - 1)
    iy = np.clip(pts[:, 1].astype(np.int32), 0, height - 1)
    grains = np.bincount(iy * width + ix, minlength=height * width).reshape(height, width).astype(np.float32)
    grains = gaussian_filter(grains, 0.7 * canvas.k, truncate=2.0)
    canvas.absorb += np.minimum(grains * rng.uniform(0.8, 1.6), 0.6)
    return {"decoy_precipitate": float(0.25 + 0.55 * amount)}
