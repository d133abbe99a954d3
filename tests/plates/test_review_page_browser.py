"""The review page in real headless Chromium: open a plate report from file://, mark three
wells (mouse, keyboard, the well box), export, and feed the CSV to the annotations reader."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from crystal_pipeline import wells
from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.ingest.annotations import read_annotations
from crystal_pipeline.ingest.reviews import Vote, agree_with_reviews
from crystal_pipeline.plates.labelling import LabelledImage, LabelTimings, PlateLabels
from crystal_pipeline.plates.report import write_plate_report
from crystal_pipeline.plates.review_page import review_queue

PLATE_ID, INSPECTION = "LAB1", "20261120"
KEY = f"{PLATE_ID}@{INSPECTION}"
THRESHOLD = 0.5


def _plate(tmp_path: Path) -> PlateLabels:
    """A labelled 96-well plate: every well a real drop picture, crystal_prob spread over [0, 1]."""
    rng = np.random.default_rng(3)
    rows = []
    for i, well in enumerate(wells.all_wells(96)):
        path = tmp_path / f"{well.name}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
        crystal = ((i * 37) % 96) / 95
        probs = np.full(10, 0.01)
        probs[2], probs[0] = crystal * 0.92, (1 - crystal) * 0.92
        probs = probs / probs.sum()
        cid = int(probs.argmax()) + 1
        rows.append(LabelledImage(wells.image_id(PLATE_ID, well.name, INSPECTION), well.name, path, cid,
                                  CLASS_NAMES[cid - 1], float(probs[2] + probs[4] + probs[6]),
                                  tuple(float(p) for p in probs)))
    return PlateLabels(rows, [], LabelTimings(0.1, 0.1, 0.2, 480.0, 96, "cpu-fast"), files=96, resolution=64)


def _wait_for_download(folder: Path, timeout_s: float = 20) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [p for p in folder.glob("*.csv")]
        if done and not list(folder.glob("*.crdownload")):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no CSV was downloaded into {folder}: {sorted(p.name for p in folder.iterdir())}")


def test_review_page_marks_three_wells_and_exports_a_csv_the_reader_accepts(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from tests.service.browser import chromium

    labels = _plate(tmp_path)
    report = write_plate_report(tmp_path / "report", KEY, 96, labels, model_version="v1", synthetic_model=False,
                                crystal_threshold=THRESHOLD)
    queue = [r.well for r in review_queue(labels.rows, THRESHOLD)]
    first, second = queue[0], queue[1]
    third = next(w.name for w in reversed(wells.all_wells(96)) if w.name not in queue[:2])
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chromium(tmp_path, download_dir=downloads) as browser:
        driver = browser.driver
        browser.open(report.paths["html"].resolve().as_uri(), "report")
        browser.wait_for_text("Review queue: the 24 wells the model is least sure of")
        cards = driver.find_elements("css selector", "#queue figure")
        assert [c.get_attribute("data-well") for c in cards] == queue  # the page shows the queue's order
        assert browser.image_size(cards[0].find_element("tag name", "img"))[0] > 0

        def press(*keys):
            ActionChains(driver).send_keys(*keys).perform()

        # 1: the mouse: a queue thumbnail, then the crystal button.
        cards[0].click()
        driver.find_element("css selector", "button[data-attr='crystal']").click()
        browser.wait_for_text("1 well reviewed")
        # 2: the keyboard only: n = next in the queue, 3 = precipitate, 5 = crystal.
        press("n", "3", "5")
        browser.wait_for_text(f"{second}: model says")
        browser.wait_for_text("2 wells reviewed")
        # 3: the well box, then keys: 3 (precipitate) and 1 (clear, which excludes the rest).
        box = driver.find_element("id", "well-input")
        box.clear()  # WebDriver puts the caret after the shown well; a person would select it
        box.send_keys(third.lower(), Keys.ENTER)
        browser.wait_for_text(f"{third}: model says")
        press("3", "1")
        browser.wait_for_text("3 wells reviewed")
        assert "your review: clear" in driver.find_element("id", "current-well").text

        driver.find_element("id", "export").click()
        browser.wait_for_text("type your name before exporting")  # no anonymous reviews
        assert not list(downloads.iterdir())
        driver.find_element("id", "reviewer").send_keys("Ana Lopez")
        driver.find_element("id", "export").click()
        browser.wait_for_text("exported 3 wells")
        browser.screenshot("review_page")
        saved = _wait_for_download(downloads)
        shown = driver.find_element("id", "csv-out").get_attribute("value")
        # Marks survive a reload (localStorage), so a reviewer can stop and come back.
        driver.refresh()
        browser.wait_for_text("3 wells reviewed")

    text = saved.read_text()
    assert text == shown and saved.name.startswith(f"review_{PLATE_ID}_{INSPECTION}_Ana_Lopez_")
    rows = list(csv.DictReader(io.StringIO(text)))
    order = {w.name: i for i, w in enumerate(wells.all_wells(96))}
    expected = sorted([(first, "crystal"), (second, "crystal;precipitate"), (third, "clear")],
                      key=lambda x: order[x[0]])
    assert [(r["well"], ";".join(sorted(r["attributes"].split(";")))) for r in rows] == expected
    assert {(r["plate_id"], r["inspection"], r["annotator"]) for r in rows} == {(PLATE_ID, INSPECTION, "review:Ana Lopez")}
    assert {r["drop"] for r in rows} == {"1"}  # single-drop plate: every mark is drop 1

    annotations_dir = tmp_path / "raw" / "annotations"
    annotations_dir.mkdir(parents=True)
    dropped = annotations_dir / saved.name
    dropped.write_bytes(saved.read_bytes())
    table = read_annotations([dropped], {KEY: 96}, {r.image_id for r in labels.rows})
    assert table.errors == []
    got = {(a.image_id, a.annotator, a.attributes) for a in table.annotations}
    assert got == {(wells.image_id(PLATE_ID, w, INSPECTION), "review:Ana Lopez", tuple(sorted(a.split(";"))))
                   for w, a in expected}
    result, summary = agree_with_reviews(
        [Vote(a.image_id, a.annotator, a.attributes, a.source_file, a.source_line, a.source_mtime_ns)
         for a in table.annotations])
    assert {l.image_id.split("/")[1]: l.class_name for l in result.labels} == {
        first: "crystal", second: "precipitate_crystal", third: "clear"}
    assert summary.newly_labelled == 3


def test_colour_by_switches_the_map_and_the_review_page_together_on_a_uv_plate(tmp_path):
    """A UV plate with the visible model's second opinion: the map's "Colour by" selector moves the
    review page's with it, shows the visible map, and the well line gives the visible model's call."""
    from selenium.webdriver.support.ui import Select

    from crystal_pipeline.plates.second_opinion import SecondOpinion
    from tests.service.browser import chromium

    labels = _plate(tmp_path)
    flipped = [dataclasses.replace(r, crystal_prob=1 - r.crystal_prob) for r in labels.rows]  # every call differs
    second = SecondOpinion("vis-1", dataclasses.replace(labels, rows=flipped), THRESHOLD)
    report = write_plate_report(tmp_path / "report", KEY, 96, labels, model_version="fused-1", synthetic_model=False,
                                crystal_threshold=THRESHOLD, second_opinion=second)
    well = report.calls_differ[0]
    with chromium(tmp_path) as browser:
        driver = browser.driver
        browser.open(report.paths["html"].resolve().as_uri(), "report")
        browser.wait_for_text("Review queue")
        maps = [driver.find_element("css selector", f"div.{c} img") for c in ("by-fused", "by-visible")]
        assert [m.is_displayed() for m in maps] == [True, False]
        map_select, review_select = [Select(s) for s in driver.find_elements("css selector", "select.colouring")]
        map_select.select_by_value("visible")
        assert [m.is_displayed() for m in maps] == [False, True]
        assert review_select.first_selected_option.get_attribute("value") == "visible"
        Select(driver.find_element("id", "queue-order")).select_by_value("changed")
        driver.find_element("css selector", f"#queue-changed figure[data-well='{well}']").click()
        browser.wait_for_text(f"{well}: the visible model says")
        assert "(UV changed the crystal call)" in driver.find_element("id", "current-well").text
        browser.screenshot("colour_by_visible")
