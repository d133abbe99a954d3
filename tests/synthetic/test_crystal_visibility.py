"""Crystal visibility is read from the pixels: what the crystals change, against the clutter around them."""

from __future__ import annotations

import numpy as np

from crystal_pipeline.synthetic.render import crystal_visibility
from crystal_pipeline.synthetic.scene import Nuisance

SHARP = Nuisance(blur=0.0, noise=0.01, contrast=1.0, gamma=1.0)


def _with_bar(background: np.ndarray, length: int) -> np.ndarray:
    image = background.copy()
    image[120:123, 100:100 + length] += 0.3  # a bright crystal edge, 3 px wide
    return image


def test_nothing_added_is_invisible_and_bigger_crystals_are_more_visible():
    flat = np.full((256, 256), 0.6, np.float32)
    assert crystal_visibility(flat, flat, SHARP) == 0.0
    seen = [crystal_visibility(_with_bar(flat, n), flat, SHARP) for n in (4, 12, 40)]
    assert seen[0] < seen[1] < seen[2] <= 1.0 and seen[2] > 0.5


def test_the_same_crystal_is_less_visible_in_a_cluttered_drop():
    rng = np.random.default_rng(0)
    flat = np.full((256, 256), 0.6, np.float32)
    grainy = (flat + rng.normal(0, 0.25, flat.shape)).astype(np.float32)  # dense precipitate
    clear = crystal_visibility(_with_bar(flat, 20), flat, SHARP)
    cluttered = crystal_visibility(_with_bar(grainy, 20), grainy, SHARP)
    assert cluttered < 0.5 * clear


def test_blur_and_low_contrast_hide_a_small_crystal():
    flat = np.full((256, 256), 0.6, np.float32)
    small = _with_bar(flat, 8)
    soft = Nuisance(blur=2.5, noise=0.01, contrast=0.6, gamma=1.0)
    assert crystal_visibility(small, flat, soft) < crystal_visibility(small, flat, SHARP)
