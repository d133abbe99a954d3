"""Hostile plate ids and inspections: each gets a clear error at the door and writes nothing.

The names tried (docs/reliability.md lists them with what each got): ``..`` and ``.``
(path steps), ``a/b`` and ``a\\b`` (separators), ``x@y`` (the key separator), a control
character, a 200-character id, and ``<!--<script>`` (accepted as a name, escaped in
every page). They enter through folder names (the incoming folder, the raw archive,
``crystal-pipeline label``) and through ``CRYSTAL_FILENAME_PATTERN``'s ``plate`` group.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.naming import FileNaming, InvalidName, RefusedName, check_name_part
from crystal_pipeline.layout import DataLayout

REFUSED = ["..", ".", "a/b", "a\\b", "x@y", "bad\x01id", "p" * 200, ""]
# Names a file system can hold as one folder name.
REFUSED_FOLDERS = ["x@y", "bad\x01id", "p" * 200, "a\\b"]


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 90).save(path)


@pytest.mark.parametrize("name", REFUSED)
def test_the_one_check_refuses_each_hostile_name_with_its_reason(name):
    with pytest.raises(RefusedName) as caught:
        check_name_part("plate id", name)
    assert "plate id" in str(caught.value)
    assert check_name_part("plate id", "<!--<script>") == "<!--<script>"  # text, escaped where shown
    assert check_name_part("inspection", "2024-05-01_day3") == "2024-05-01_day3"


def test_a_key_that_did_not_come_from_checked_names_is_refused():
    assert archive.split_plate_key("P1@day3") == ("P1", "day3")
    assert archive.split_plate_key("P1") == ("P1", None)
    for key in ("x@y@z", "..", "a/b@day1", "P1@..", "@day1"):
        with pytest.raises(InvalidName):
            archive.split_plate_key(key)


@pytest.mark.parametrize("plate", ["..", ".", "x@y", "a\\b"])
def test_a_pattern_group_that_names_a_hostile_plate_is_refused(plate):
    naming = FileNaming.from_setting("plate_well_drop")
    assert naming.parse("P7_01A_1").plate == "P7"
    with pytest.raises(RefusedName, match="plate id"):
        naming.parse(f"{plate}_01A_1")
    inspections = FileNaming.from_setting(r"(?P<inspection>[^_]+)_(?P<well>[A-H]\d\d)")
    with pytest.raises(RefusedName, match="inspection"):
        inspections.parse("..@x_A01")


def test_the_archive_quarantines_files_under_a_hostile_folder_and_reads_the_rest(tmp_path):
    raw = tmp_path / "raw"
    image(raw / "plates" / "GOOD" / "A01.png")
    for name in REFUSED_FOLDERS:
        image(raw / "plates" / name / "A01.png")
    image(raw / "plates" / "GOOD" / "x@y" / "A01.png")  # a hostile inspection folder
    image(raw / "plates" / "PAT" / "lab_.._A01_1.png")  # a pattern naming plate `..`
    files = archive.scan_archive(raw)
    good = [f for f in files if f.error is None]
    assert [(f.plate_id, f.inspection, f.well) for f in good] == [("GOOD", None, "A01")]
    refused = {(f.plate_id, f.inspection): f.error for f in files if f.error}
    for name in REFUSED_FOLDERS:
        assert refused[(name, None)].startswith("refused folder name: plate id")
    assert "refused folder name: inspection 'x@y'" in refused[("GOOD", "x@y")]
    pattern = archive.scan_archive(raw, FileNaming.from_setting("plate_well_drop"))
    [dotdot] = [f for f in pattern if f.plate_id == "PAT"]
    assert "plate id '..' is a path step" in dotdot.error


@pytest.mark.parametrize("key", ["..", ".", "a/b", "../x", "/etc", "x/../../y"])
def test_a_plate_report_never_leaves_reports_plates(tmp_path, key):
    layout = DataLayout.under(tmp_path)
    assert layout.plate_report_dir("P1") == (tmp_path / "reports" / "plates" / "P1").resolve()
    assert layout.plate_timeline_csv("P1@day3").parent.name == "P1@day3"
    with pytest.raises(ValueError, match="directly under"):
        layout.plate_report_dir(key)
    with pytest.raises(ValueError):
        layout.plate_timeline_csv(key)


def test_json_in_the_review_page_cannot_open_a_comment_or_close_its_script():
    from crystal_pipeline.plates.labelling import LabelledImage
    from crystal_pipeline.plates.review_page import review_section

    key = "<!--<script>&'"
    rows = [LabelledImage(image_id=f"{key}/A01", well="A01", path=None, class_id=1, class_name="clear",
                          crystal_prob=0.5, probs=(0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05))]
    page = review_section(key, rows, 0.5, thumbnail=lambda path: None)
    block = re.search(r"<script type='application/json' id='review-data'>(.*?)</script>", page, re.S).group(1)
    assert not set("<>&'") & set(block)
    assert json.loads(block)["plate_key"] == key
    assert "<!--" not in page and "<script>&" not in page


def test_a_plate_and_protein_named_to_break_the_page_stay_text_in_the_report(tmp_path):
    """The whole plate report (map, tables, review block) for a plate ``<!--<script>`` of a
    protein ``</script><b>x</b>&amp;``: the page's own elements are the only ones in it."""
    from crystal_pipeline.plates.labelling import LabelledImage, LabelTimings, PlateLabels
    from crystal_pipeline.plates.report import write_plate_report

    key, protein = "<!--<script>", "</script><b>x</b>&amp;"
    img = tmp_path / "A01.png"
    Image.new("L", (16, 16), 90).save(img)
    rows = [LabelledImage(image_id=f"{key}/A01", well="A01", path=img, class_id=3, class_name="crystals",
                          crystal_prob=0.9, probs=(0.02, 0.02, 0.9, 0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005))]
    labels = PlateLabels(rows, [], LabelTimings(0, 0, 0, 0, 1, "cpu"), files=1, resolution=64)
    report = write_plate_report(tmp_path / "out", key, 96, labels, model_version="v1", synthetic_model=True,
                                crystal_threshold=0.5, plate_meta={"protein": protein})
    page = report.paths["html"].read_text()
    assert "<!--" not in page and "<b>x</b>" not in page and "&amp;amp;" in page
    assert page.count("<script") == page.count("</script>") == 2  # the review data block and its code
    assert "&lt;!--&lt;script&gt;" in page
