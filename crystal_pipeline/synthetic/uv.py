"""The UV picture of a drawn drop, and salt crystals, the latent content only UV tells apart.

Protein crystals fluoresce under UV (tryptophan) and salt crystals do not, which is why
crystallographers take a UV picture beside the white-light one. The generator draws salt
crystals (faceted like protein crystals, into the white-light drop layers, so a visible-only
model sees a crystal) only when UV pictures are drawn, from UV's own seed stream, so an
archive without UV keeps its bytes. The experts' labels do not change with salt: they
checked UV, so a salt-only drop is what its class says (clear, precipitate, ...), not crystal.

The UV picture is read from the same canvas as the visible one: protein crystals bright,
salt crystals dark (they block the drop's faint glow), protein precipitate faintly bright,
a clear drop dark, then UV's own blur (a wider point spread than white light) and noise
(a low photon count: shot noise over read noise).
"""

from __future__ import annotations

import numpy as np

from crystal_pipeline.synthetic.blur import gaussian_filter

#: Share of wells that get salt crystals (salt in the screen's cocktail crystallises on its own).
SALT_SHARE = 0.25
SALT_LAYER = "salt"  # a drawing layer compose() never reads: where salt lies, for the UV picture
#: UV brightness of: protein crystals, precipitate per unit of absorption, the drop's glow, the surround.
CRYSTAL_GLOW, PRECIPITATE_GLOW, DROP_GLOW, SURROUND = 0.8, 0.3, 0.08, 0.02
UV_BLUR = 1.6  # sigma at 256 px, added to the white-light defocus
UV_READ_NOISE, UV_SHOT_NOISE = 0.025, 0.06


def draw_salt(canvas, rng: np.random.Generator) -> float:
    """Maybe draw salt crystals into ``canvas`` (white-light layers and :data:`SALT_LAYER`);
    how many, 0..1 (0: none). Habits and sizes as protein crystals, so only UV tells them apart."""
    from crystal_pipeline.synthetic.contents import _HABITS

    if rng.random() >= SALT_SHARE:
        return 0.0
    k, drop = canvas.k, canvas.scene.drop
    draw, glare, mask = canvas.layer("dark"), canvas.layer("glare"), canvas.layer(SALT_LAYER)
    amount = float(rng.uniform(0.3, 1.0))
    contrast = rng.uniform(0.7, 1.1)
    length = k * (8.0 + 40.0 * amount)
    count = int(np.clip(rng.geometric(0.4), 1, 6))
    habit = str(rng.choice(["cube", "needle", "plate"]))
    for x, y in drop.sample_points(rng, count, reach=max(0.3, 0.85 - length / drop.radius)):
        scale, angle = length * rng.uniform(0.6, 1.2), rng.uniform(0, np.pi)
        state = rng.bit_generator.state  # the same shape twice: in white light and in the salt mask
        _HABITS[habit](draw, glare, x, y, scale, angle, contrast, rng)
        rng.bit_generator.state = state
        _HABITS[habit](mask, mask, x, y, scale, angle, 1.0, rng)
    return amount


def _mask(canvas, *names: str) -> np.ndarray | float:
    parts = [canvas._array(n) for n in names]
    arrays = [p for p in parts if not isinstance(p, float)]
    return (np.maximum.reduce(arrays) > 0).astype(np.float32) if arrays else 0.0


def render_uv(canvas, rng: np.random.Generator, nuisance) -> np.ndarray:
    """The 8-bit UV picture of the drop drawn on ``canvas`` (same frame as the visible one)."""
    from crystal_pipeline.synthetic.contents import CRYSTAL_LAYERS

    inside = canvas.scene.inside
    crystal = _mask(canvas, *CRYSTAL_LAYERS)
    salt = _mask(canvas, SALT_LAYER)
    grains = np.clip(canvas.absorb, 0.0, 1.0)
    glow = SURROUND + inside * (DROP_GLOW + PRECIPITATE_GLOW * grains)
    glow = glow * (1.0 - 0.9 * salt * inside)  # salt crystals block the drop's glow
    glow = np.maximum(glow, CRYSTAL_GLOW * crystal * inside)
    sigma = np.hypot(nuisance.blur, UV_BLUR) * canvas.k
    image = gaussian_filter(glow.astype(np.float32), sigma, truncate=2.5)
    noise = np.sqrt(UV_READ_NOISE ** 2 + UV_SHOT_NOISE ** 2 * np.maximum(image, 0.0))
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * noise
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
