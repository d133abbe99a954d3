"""Hits get their crystal's position at labelling (batched, hits only), in hits.csv and on the thumbnails."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from crystal_pipeline.ingest.archive import scan_plate
from crystal_pipeline.ingest.imaging import load_grey
from crystal_pipeline.model import CrystalNet, cam
from crystal_pipeline.plates import heatmap
from crystal_pipeline.plates.labelling import label_plate
from crystal_pipeline.plates.report import _thumbnail, write_plate_report

RES = 64


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from crystal_pipeline.synthetic import write_plate

    plate_dir = tmp_path_factory.mktemp("incoming") / "P1"
    write_plate(plate_dir, "P1", seed=5, wells=96, size=48, workers=1, imager="HWI")  # 4:3 frames, 64 x 48
    torch.manual_seed(0)
    net = CrystalNet(resolution=RES).eval()
    with torch.no_grad():
        net.out.weight.mul_(3.0)  # crystal probabilities spread over the plate
    files = scan_plate(plate_dir)
    plain = label_plate(files, net, batch_size=32, workers=1)
    threshold = float(np.quantile([r.crystal_prob for r in plain.rows], 0.8))
    return net, label_plate(files, net, batch_size=32, workers=1, locate_threshold=threshold), threshold


def test_every_hit_and_only_the_hits_get_a_position(labelled):
    net, labels, threshold = labelled
    hits = [r for r in labels.rows if r.crystal_prob >= threshold]
    assert threshold > 0 and 10 <= len(hits) < len(labels.rows)
    assert all(r.crystal is None for r in labels.rows if r.crystal_prob < threshold)
    pixels = np.stack([load_grey(r.path, RES) for r in hits])
    # in the arithmetic the plate was labelled in (auto: bf16 on a CPU with bf16 units)
    expected = cam.crystal_positions(net, pixels, [(64, 48)] * len(hits), precision=labels.timings.precision)
    for r, want in zip(hits, expected):
        assert r.crystal is not None and 0 <= r.crystal.x <= 1 and 0 <= r.crystal.y <= 1
        assert (r.crystal.x, r.crystal.y) == pytest.approx((want.x, want.y), abs=1e-5)
        # the map covers the central square of the 4:3 frame only
        assert r.crystal.xs[0] > (64 - 48) / 2 / 64 - 1e-6 and r.crystal.xs[-1] < 1 - (64 - 48) / 2 / 64 + 1e-6


def test_hits_csv_and_thumbnails_show_the_position(labelled, tmp_path):
    _, labels, threshold = labelled
    report = write_plate_report(tmp_path, "P1", 96, labels, model_version="v1", synthetic_model=True,
                                crystal_threshold=threshold)
    rows = list(csv.DictReader(report.paths["csv"].open()))
    assert list(rows[0])[-2:] == ["crystal_x", "crystal_y"]
    for row in rows:
        assert (row["crystal_x"] != "") == (row["hit"] == "1")
    page = report.paths["html"].read_text()
    assert "where the model sees the crystal" in page
    hit = next(r for r in labels.rows if r.crystal is not None)
    with_heat = heatmap.thumbnails_with_heat(labels.rows, _thumbnail, 160)
    assert with_heat(hit.path) != _thumbnail(hit.path)
    plain = next(r for r in labels.rows if r.crystal is None)
    assert with_heat(plain.path) == _thumbnail(plain.path)


def test_overlay_is_warm_at_the_peak_and_untouched_where_the_map_is_zero():
    position = cam.CrystalPosition(0.25, 0.25, ((1.0, 0.0), (0.0, 0.0)), (0.25, 0.75), (0.25, 0.75))
    grey = np.full((40, 40, 3), 100, np.uint8)
    out = heatmap.overlay(grey, position).astype(int)
    warm = out[12, 8]  # near the peak, off the cross
    assert warm[0] > 150 and warm[2] < 80
    assert (out[35, 35] == 100).all()
