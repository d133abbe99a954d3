"""Plate reports: files exist and agree with the labels, for every plate format."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystal_pipeline import wells
from collections import Counter

from crystal_pipeline.classes import CLASS_NAMES, MARCO_CLASSES, marco_outcome
from crystal_pipeline.plates.labelling import LabelledImage, LabelTimings, PlateLabels, QuarantinedImage
from crystal_pipeline.evaluation.metrics import crystal_probability
from crystal_pipeline.plates.report import write_plate_report


def _labels(plate_format: int, image_dir: Path, seed: int = 0) -> PlateLabels:
    """Random predictions for every well but two quarantined and three missing ones."""
    rng = np.random.default_rng(seed)
    names = [w.name for w in wells.all_wells(plate_format)]
    quarantined_wells, missing = set(names[1:3]), set(names[-3:])
    image = image_dir / "drop.png"
    Image.fromarray(rng.integers(0, 255, (48, 64), dtype=np.uint8)).save(image)
    rows, quarantined = [], []
    for well in names:
        if well in missing:
            continue
        if well in quarantined_wells:
            quarantined.append(QuarantinedImage(f"P/{well}", well, image_dir / f"{well}.png", "truncated image"))
            continue
        p = rng.dirichlet(np.full(10, 0.3)).astype(np.float32)
        rows.append(LabelledImage(f"P/{well}", well, image, int(p.argmax()) + 1, CLASS_NAMES[int(p.argmax())],
                                  float(crystal_probability(p[None])[0]), tuple(float(x) for x in p)))
    n = len(rows) + len(quarantined)
    return PlateLabels(rows, quarantined, LabelTimings(0.1, 0.2, 0.3, len(rows) / 0.3, len(rows), "cpu-fast"),
                       files=n, resolution=64)


@pytest.mark.parametrize("plate_format", [96, 384, 1536])
def test_report_files_for_every_format(tmp_path, plate_format):
    labels = _labels(plate_format, tmp_path)
    conditions = {w.name: {"well": w.name, "cocktail": f"0.1 M buffer {w.name}", "ph": "7.0"}
                  for w in wells.all_wells(plate_format)}
    report = write_plate_report(tmp_path / "out", "P", plate_format, labels, model_version="v1",
                                synthetic_model=True, crystal_threshold=0.5, plate_meta={"protein": "lysozyme"},
                                conditions=conditions)
    for path in report.paths.values():
        assert path.is_file() and path.stat().st_size > 0
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temp files

    png = Image.open(io.BytesIO(report.map_png))
    png.load()
    rows, cols = wells.PLATE_FORMATS[plate_format]
    # Every well gets at least a few pixels, and the figure stays a screen-sized image.
    assert png.width >= cols * 8 and png.height >= rows * 8
    assert png.width <= 2600 and png.height <= 1600
    assert report.paths["map_png"].read_bytes() == report.map_png

    with open(report.paths["csv"], newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(labels.rows) == plate_format - 5
    probs = [float(r["crystal_prob"]) for r in table]
    assert probs == sorted(probs, reverse=True)
    assert {r["well"] for r in table} == {r.well for r in labels.rows}
    best = max(labels.rows, key=lambda r: r.crystal_prob)
    assert table[0]["well"] == best.well and table[0]["cocktail"] == f"0.1 M buffer {best.well}"
    assert table[0]["protein"] == "lysozyme" and table[0]["ph"] == "7.0"
    assert sum(int(r["hit"]) for r in table) == len(report.hits) == sum(r.crystal_prob >= 0.5 for r in labels.rows)
    assert all(abs(sum(float(r[f"p_{n}"]) for n in CLASS_NAMES) - 1) < 1e-4 for r in table[:20])
    by_id = {r.image_id: r for r in labels.rows}
    assert [r["marco_class"] for r in table] == [marco_outcome(by_id[r["image_id"]].probs) for r in table]
    counts = Counter(r["marco_class"] for r in table)
    assert len(counts) >= 3 and set(counts) <= set(MARCO_CLASSES)
    marco_line = ", ".join(f"{name} {counts[name]}" for name in MARCO_CLASSES)
    assert f"| MARCO classes | {marco_line} |" in report.markdown

    page = report.paths["html"].read_text()
    assert "synthetic" in page and "data:image/png;base64," in page and "data:image/jpeg;base64," in page
    assert "truncated image" in page and "Missing wells (3)" in page
    assert "synthetic" in report.markdown and "data:image/png;base64," in report.markdown
    assert f"| {best.well} |" in report.markdown


def test_loose_images_have_no_map_and_no_banner_for_real_models(tmp_path):
    labels = _labels(96, tmp_path)
    report = write_plate_report(tmp_path / "out", "samples", None, labels, model_version="v2",
                                synthetic_model=False, crystal_threshold=1.0)
    assert report.map_png is None and "map_png" not in report.paths
    assert not (tmp_path / "out" / "plate_map.png").exists()
    assert "synthetic" not in report.markdown
    assert "No well reaches" in report.markdown  # threshold 1.0: no hits, still a ranked list
    assert "Missing wells" not in report.paths["html"].read_text()


def test_bad_threshold_is_refused(tmp_path):
    with pytest.raises(ValueError, match="crystal_threshold"):
        write_plate_report(tmp_path, "P", 96, _labels(96, tmp_path), model_version="v", synthetic_model=False,
                           crystal_threshold=1.5)


def test_review_budget_by_top_n_or_by_expected_recall(tmp_path):
    from crystal_pipeline.plates.report import review_budget

    labels = _labels(96, tmp_path, seed=2)
    probs = sorted((r.crystal_prob for r in labels.rows), reverse=True)
    total = sum(probs)
    top = review_budget(labels.rows, top_n=10)
    assert top.wells == 10 and top.expected_recall == pytest.approx(sum(probs[:10]) / total)
    by_recall = review_budget(labels.rows, recall=0.5)
    k = by_recall.wells
    assert sum(probs[:k]) >= 0.5 * total > sum(probs[:k - 1])  # the fewest wells that reach it
    assert review_budget(labels.rows, recall=1.0).wells <= len(probs)
    assert review_budget(labels.rows) is None
    with pytest.raises(ValueError):
        review_budget(labels.rows, recall=1.5)
    report = write_plate_report(tmp_path / "out", "P", 96, labels, model_version="v1", synthetic_model=False,
                                crystal_threshold=0.5, review_recall=0.5)
    assert f"top {k} wells by crystal_prob hold an expected" in report.markdown
    assert "review budget" in report.paths["html"].read_text()


def _review_first_rows(report) -> list[dict]:
    with open(report.paths["csv"], newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["review_first"] == "1"]


def test_review_first_is_the_budgets_hits_by_default_and_from_config(tmp_path):
    from crystal_pipeline.plates.report import default_review_wells

    labels = _labels(1536, tmp_path, seed=3)
    ranked = sorted(labels.rows, key=lambda r: -r.crystal_prob)
    # A threshold that flags most of the plate, as a weak model's 95%-recall threshold does.
    threshold = ranked[int(0.7 * len(ranked))].crystal_prob
    report = write_plate_report(tmp_path / "default", "P", 1536, labels, model_version="v1", synthetic_model=False,
                                crystal_threshold=threshold)
    n = default_review_wells(len(labels.rows))
    assert n == 77 and len(report.hits) > 1000  # 5% of 1531 labelled wells, rounded up
    assert [r.image_id for r in report.review_first] == [r.image_id for r in ranked[:n]]
    assert [r["image_id"] for r in _review_first_rows(report)] == [r.image_id for r in ranked[:n]]
    assert f"{n} of {len(report.hits)} hits" in report.markdown

    # From config: the top 5 wells; or a recall target. Only hits can be 'review first'.
    top5 = write_plate_report(tmp_path / "top5", "P", 1536, labels, model_version="v1", synthetic_model=False,
                              crystal_threshold=threshold, review_top_n=5)
    assert [r["well"] for r in _review_first_rows(top5)] == [r.well for r in ranked[:5]]
    strict = ranked[2].crystal_prob  # only three wells reach it
    few = write_plate_report(tmp_path / "few", "P", 1536, labels, model_version="v1", synthetic_model=False,
                             crystal_threshold=strict, review_top_n=50)
    assert len(few.hits) == 3 and [r.well for r in few.review_first] == [r.well for r in ranked[:3]]
    assert len(_review_first_rows(few)) == 3


def test_review_first_stars_are_drawn_apart_on_the_map(tmp_path):
    from crystal_pipeline.reporting.plate_map import REVIEW_FIRST_COLOUR, plate_map_png

    labels = _labels(96, tmp_path, seed=4)
    top = [r.slot for r in sorted(labels.rows, key=lambda r: -r.crystal_prob)]
    gold = np.array([int(REVIEW_FIRST_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])

    def gold_pixels(review_first):
        png = plate_map_png("P", 96, labels, 0.0, review_first=review_first)
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        return int((np.abs(img - gold).sum(axis=2) < 30).sum())

    assert gold_pixels(None) == 0  # every hit alike: no gold anywhere
    legend = gold_pixels(set())  # the key's star only
    one, four = gold_pixels(set(top[:1])) - legend, gold_pixels(set(top[:4])) - legend
    assert one > 10 and four > 3 * one  # one large star per review-first well, on the grid


def test_a_uv_plate_report_colours_by_either_model_and_marks_the_changed_calls(tmp_path):
    import json
    import re

    from crystal_pipeline.plates.second_opinion import SecondOpinion

    fused, visible = _labels(96, tmp_path, seed=1), _labels(96, tmp_path, seed=2)
    hostile = "v<script>alert(1)</script>"
    second = SecondOpinion(hostile, visible, 0.4)
    report = write_plate_report(tmp_path / "uv", "P", 96, fused, model_version="fused-1", synthetic_model=False,
                                crystal_threshold=0.3, model_reason="Chosen <because> UV.", second_opinion=second)
    other = {r.slot: r.crystal_prob >= 0.4 for r in visible.rows}
    expected = sorted(r.slot for r in fused.rows if (r.crystal_prob >= 0.3) != other[r.slot])
    assert expected and sorted(report.calls_differ) == expected
    meta = json.loads(report.paths["hits_meta"].read_text())
    assert meta["model_reason"] == "Chosen <because> UV."
    assert meta["second_opinion"]["model_version"] == hostile and sorted(meta["second_opinion"]["calls_differ"]) == expected
    page = report.paths["html"].read_text()
    assert page.count("<select class='colouring'>") == 2  # the map's and the review page's
    assert "<div class='by-visible'><img alt='plate map, visible only'" in page
    assert report.paths["map_visible_png"].read_bytes() != report.paths["map_png"].read_bytes()
    assert "<script>alert" not in page and "Chosen &lt;because&gt; UV." in page
    data = json.loads(re.search(r"id='review-data'>(.*?)</script>", page, re.S).group(1))
    assert data["queues"]["changed"] == [s for s in data["queues"]["changed"] if s in expected]
    assert {w for w, v in data["wells"].items() if v.get("changed")} == set(expected)
    changed = data["wells"][expected[0]]
    assert changed["second"]["p"] == round(next(r.crystal_prob for r in visible.rows if r.slot == expected[0]), 4)

    plain = write_plate_report(tmp_path / "vis", "P", 96, visible, model_version="v", synthetic_model=False,
                               crystal_threshold=0.4, model_reason="No UV.")
    plain_page = plain.paths["html"].read_text()
    assert "<select class='colouring'>" not in plain_page and "class='by-visible'" not in plain_page and "map_visible_png" not in plain.paths
    assert plain.calls_differ is None and json.loads(plain.paths["hits_meta"].read_text())["second_opinion"] is None
