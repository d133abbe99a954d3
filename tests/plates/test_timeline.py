"""The time course (issue 11): first-hit inspections, "new since the previous inspection",
timeline.csv and its check, the report of the newest inspection."""

from __future__ import annotations

import csv
import datetime as dt

import pandas as pd
import pytest
from PIL import Image

from crystal_pipeline import wells
from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.ingest.inspections import order_inspections
from crystal_pipeline.plates.labelling import LabelledImage, LabelTimings, PlateLabels
from crystal_pipeline.plates.report import write_plate_report
from crystal_pipeline.plates.timeline import load_timeline, timeline_problems
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import predictions as prediction_table

# Given out of order and in three spellings: the order is by the time each name reads as.
INSPECTIONS = ("20240315_090000", "2024-03-08", "20240301")
FIRST, SECOND, THIRD = "20240301", "2024-03-08", "20240315_090000"
# crystal_prob per inspection (FIRST, SECOND, THIRD); every other well-drop stays at 0.05.
COURSE = {("A01", 1): (0.9, 0.95, 0.97),   # a hit from the start: never new
          ("B02", 1): (0.1, 0.8, 0.9),     # crystals at the second inspection
          ("C03", 1): (0.2, 0.7, 0.6),
          ("D04", 2): (0.0, 0.6, 0.9),     # drop 2 of D04
          ("E05", 1): (0.1, 0.2, 0.8),     # only at the third
          ("F06", 1): (0.8, 0.1, 0.9)}     # a hit, then not, then again: new at the third
THRESHOLD = 0.5


def _probs(crystal: float) -> list[float]:
    p = [0.0] * 10
    p[2], p[0] = crystal, 1.0 - crystal  # class 3 (crystal) vs class 1 (clear)
    return p


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    now = dt.datetime(2024, 3, 20)
    images, predictions = [], []
    for k, inspection in enumerate(INSPECTIONS):
        order = order_inspections(INSPECTIONS).index(inspection)
        folder = tmp_path / "plates" / "TC" / inspection
        folder.mkdir(parents=True)
        for well in wells.all_wells(96):
            for drop in (1, 2):
                crystal = COURSE.get((well.name, drop), (0.05,) * 3)[order]
                image_id = wells.image_id("TC", well.name, inspection, drop)
                path = folder / f"{wells.slot_name(well.name, drop)}.png"
                if (well.name, drop) in COURSE:
                    Image.new("L", (16, 16), int(255 * crystal)).save(path)
                images.append(dict(image_id=image_id, plate_id="TC", inspection=inspection, plate_format=96,
                                   well=well.name, well_index=well.index(96), row=well.row, col=well.col,
                                   path=str(path), status="ok", source="incoming", ingested_at=now, drop=drop,
                                   plate_drops=2))
                probs = _probs(crystal)
                best = max(range(10), key=probs.__getitem__)
                predictions.append(dict(image_id=image_id, plate_id="TC", inspection=inspection, well=well.name,
                                        model_version="v1", class_id=best + 1, class_name=CLASS_NAMES[best],
                                        crystal_prob=crystal, probs=probs, predicted_at=now))
    image_table.upsert_images(wh, pd.DataFrame(images, columns=list(image_table.IMAGE_COLUMNS)))
    frame = pd.DataFrame(predictions, columns=list(prediction_table.PREDICTION_COLUMNS))
    for inspection in INSPECTIONS:
        prediction_table.replace_plate_predictions(wh, "TC", inspection, "v1",
                                                   frame[frame["inspection"] == inspection])
    return wh


def test_first_hits_and_new_hits_follow_the_inspection_dates(warehouse):
    timeline = load_timeline(warehouse, "TC", "v1", THRESHOLD)
    assert timeline.inspections == [FIRST, SECOND, THIRD]
    assert len(timeline.wells) == 96 * 2
    first = {h.slot: h.first_hit for h in timeline.wells if h.ever_hit}
    assert first == {"A01": FIRST, "B02": SECOND, "C03": SECOND, "D04_2": SECOND, "E05": THIRD, "F06": FIRST}
    assert timeline.new_hits(FIRST) == []  # nothing before the first inspection
    assert [h.slot for h in timeline.new_hits(SECOND)] == ["B02", "C03", "D04_2"]  # by crystal_prob now
    assert [h.slot for h in timeline.new_hits(THIRD)] == ["F06", "E05"]
    assert timeline.previous(THIRD) == SECOND and timeline.previous(FIRST) is None


def test_timeline_csv_and_its_check_fail_on_a_bad_file(warehouse, tmp_path):
    timeline = load_timeline(warehouse, "TC", "v1", THRESHOLD)
    path = tmp_path / "timeline.csv"
    path.write_bytes(timeline.csv_bytes())
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 96 * 2
    b02 = [r for r in rows if r["well"] == "B02" and r["drop"] == "1"]
    assert [(r["inspection"], r["inspection_order"], r["hit"], r["first_hit_inspection"]) for r in b02] == \
        [(FIRST, "1", "0", SECOND), (SECOND, "2", "1", SECOND), (THIRD, "3", "1", SECOND)]
    assert b02[0]["inspection_time"] == "2024-03-01T00:00:00" and b02[2]["inspection_time"] == "2024-03-15T09:00:00"
    labelled = prediction_table.plate_predictions(warehouse, "TC", SECOND, "v1", columns=("image_id",))["image_id"]
    assert timeline_problems(path, SECOND, labelled) == []
    # A stale file: one image lost, and a first hit that is not the earliest hit.
    kept = [r for r in rows if r["image_id"] != "TC@2024-03-08/H12"]
    for r in kept:
        if (r["well"], r["drop"]) == ("B02", "1"):
            r["first_hit_inspection"] = THIRD
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    problems = timeline_problems(path, SECOND, labelled)
    assert len(problems) == 2 and "TC@2024-03-08/H12" in problems[0] and "B02" in problems[1]


def test_report_of_the_newest_inspection_lists_new_hits_first(warehouse, tmp_path):
    timeline = load_timeline(warehouse, "TC", "v1", THRESHOLD)
    rows = [LabelledImage(o.image_id, o.well, o.path, o.class_id, o.class_name, o.crystal_prob,
                          tuple(_probs(o.crystal_prob)), o.drop)
            for h in timeline.wells if (o := h.at(THIRD)) is not None]
    labels = PlateLabels(rows=rows, quarantined=[], timings=LabelTimings(0, 0, 1, len(rows), len(rows), "test"),
                         files=len(rows), resolution=64, drops=2)
    report = write_plate_report(tmp_path / "r", f"TC@{THIRD}", 96, labels, model_version="v1",
                                synthetic_model=False, crystal_threshold=THRESHOLD, timeline=timeline)
    text = report.markdown
    new_section = text.index(f"## New hits since {SECOND} (2)")
    assert new_section < text.index("## Top")
    new_table = text[new_section:text.index("## Top")]
    assert new_table.index("F06") < new_table.index("E05") and "B02" not in new_table
    assert "new hits since previous inspection | 2" in text
    page = report.paths["html"].read_text()
    across = page[page.index("Hits across inspections"):page.index("<section id='review'>")]
    assert across.count("<h3>") == 6  # every hit at the third inspection (the review section follows)
    assert page.index("<h3>F06 (new)") < page.index("<h3>A01:")  # new hits first
    assert page.count("data:image/jpeg") >= 6 * 3  # each hit photographed at each inspection
    with open(report.paths["csv"], newline="") as handle:
        hits = {(r["well"], r["drop"]) for r in csv.DictReader(handle) if r["hit"] == "1"}
    assert hits == {("A01", "1"), ("B02", "1"), ("C03", "1"), ("D04", "2"), ("E05", "1"), ("F06", "1")}
