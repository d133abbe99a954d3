"""The generator's geometry truth: crystal boxes and the drop ellipse match the pixels drawn."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from crystal_pipeline.classes import CRYSTAL_CLASS_IDS
from crystal_pipeline.synthetic import render, write_archive
from crystal_pipeline.synthetic.geometry import COLUMNS, GEOMETRY_FILE
from crystal_pipeline.synthetic.imager import IMAGER_A, IMAGER_HWI


def _render_with_layers(monkeypatch, seed: int, class_id: int, size: int, imager):
    """render_well, keeping the scene composed with and without the crystal layers (the
    generator's own pair, caught where it measures the crystals' visibility)."""
    caught = {}
    real = render.crystal_visibility

    def spy(composed, hidden, nuisance):
        caught["composed"], caught["hidden"] = composed, hidden
        return real(composed, hidden, nuisance)

    monkeypatch.setattr(render, "crystal_visibility", spy)
    image, truth = render.render_well(np.random.default_rng(seed), class_id, size, 0.3, imager)
    return image, truth, caught["composed"], caught["hidden"]


def _pixel_box(shape, width, height):
    return (int(np.floor(shape.x0 * width + 1e-6)), int(np.floor(shape.y0 * height + 1e-6)),
            int(np.ceil(shape.x1 * width - 1e-6)), int(np.ceil(shape.y1 * height - 1e-6)))


@pytest.mark.parametrize("seed", range(6))
def test_crystal_boxes_hold_exactly_the_pixels_the_crystals_change(monkeypatch, seed):
    image, truth, composed, hidden = _render_with_layers(monkeypatch, seed, 3, 128, IMAGER_A)
    height, width = image.shape
    crystals = [s for s in truth.geometry if s.kind == "crystal"]
    assert crystals and [s.kind for s in truth.geometry].count("drop") == 1
    changed = np.abs(composed - hidden) > 1e-6
    inside = np.zeros_like(changed)
    for shape in crystals:
        x0, y0, x1, y1 = _pixel_box(shape, width, height)
        inside[y0:y1, x0:x1] = True
    assert changed.any()
    assert not (changed & ~inside).any()  # nothing a crystal changed lies outside every box
    ys, xs = np.nonzero(changed)
    union = min(s.x0 for s in crystals), min(s.y0 for s in crystals), max(s.x1 for s in crystals), max(s.y1 for s in crystals)
    # ... and the boxes are tight: their union reaches no more than 2 px past what changed
    assert xs.min() - union[0] * width <= 2 and union[2] * width - (xs.max() + 1) <= 2
    assert ys.min() - union[1] * height <= 2 and union[3] * height - (ys.max() + 1) <= 2


def test_hwi_boxes_are_fractions_of_the_4_3_frame(monkeypatch):
    image, truth, composed, hidden = _render_with_layers(monkeypatch, 3, 3, 128, IMAGER_HWI)
    height, width = image.shape
    assert width == 171
    diff = np.abs(composed - hidden)
    y, x = np.unravel_index(np.argmax(diff), diff.shape)
    fx, fy = (x + 0.5) / width, (y + 0.5) / height
    assert any(s.contains(fx, fy) for s in truth.geometry if s.kind == "crystal")
    drop = next(s for s in truth.geometry if s.kind == "drop")
    cx, cy, rx, ry, _ = drop.ellipse
    assert abs(cx - 0.5) < 0.1 and abs(cy - 0.5) < 0.1  # HWI drops sit near the frame centre
    # the box spans about 2 radii: a fraction of the width across, of the height down
    assert (drop.x1 - drop.x0) * width == pytest.approx(2 * np.sqrt(rx * ry) * height, rel=0.1)
    assert (drop.y1 - drop.y0) == pytest.approx(2 * np.sqrt(rx * ry), rel=0.1)


def test_drop_ellipse_matches_the_drop_mask(monkeypatch):
    from crystal_pipeline.synthetic.scene import draw_scene

    scene = draw_scene(np.random.default_rng(5), 128, IMAGER_A)
    from crystal_pipeline.synthetic.geometry import drop_shape

    shape = drop_shape(scene.drop, 128, 128)
    ys, xs = np.nonzero(scene.inside > 0.5)
    # the mask's extent is the ellipse's box, up to the boundary ripple (a few percent of the radius)
    tolerance = 0.05 * scene.drop.radius + 1
    assert abs(xs.min() - shape.x0 * 128) <= tolerance and abs(xs.max() + 1 - shape.x1 * 128) <= tolerance
    assert abs(ys.min() - shape.y0 * 128) <= tolerance and abs(ys.max() + 1 - shape.y1 * 128) <= tolerance


def test_archive_writes_one_drop_row_per_well_and_crystals_for_crystal_classes(tmp_path):
    summary = write_archive(tmp_path, plates=1, wells=96, size=48, seed=4, workers=1)
    rows = list(csv.DictReader((tmp_path / GEOMETRY_FILE).open()))
    assert tuple(rows[0]) == COLUMNS
    truth = {r["well"]: int(r["class_id"]) for r in csv.DictReader((tmp_path / "synthetic_truth.csv").open())}
    drops = [r["well"] for r in rows if r["kind"] == "drop"]
    assert sorted(drops) == sorted(truth) and len(truth) == summary.images
    with_crystals = {r["well"] for r in rows if r["kind"] == "crystal"}
    assert with_crystals == {w for w, c in truth.items() if c in CRYSTAL_CLASS_IDS}
    for r in rows:
        assert 0.0 <= float(r["x0"]) < float(r["x1"]) <= 1.0 and 0.0 <= float(r["y0"]) < float(r["y1"]) <= 1.0
