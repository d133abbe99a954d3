"""Drops per well and imager file names (issue 11): every drop spelling, missing drops, bad names,
the CRYSTAL_FILENAME_PATTERN setting on real sample names, and the split keeping drops together."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.real_samples import REAL_SAMPLES
from crystal_pipeline import wells
from crystal_pipeline.ingest import archive, splits
from crystal_pipeline.ingest.naming import FileNaming
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.plates.labelling import missing_wells

SPELLINGS = ("_", "-", ".", "d")


def three_drop_plate(folder):
    """96 wells x 3 drops, drop 1 bare (``A01``), drops 2 and 3 in every accepted spelling in turn;
    C05 drop 2 missing, plus a bad name, a well off the plate and a duplicate spelling of A01 drop 2."""
    folder.mkdir(parents=True)
    (folder / "plate.json").write_text(json.dumps({"format": 96, "drops": 3}))
    tiny = Image.new("L", (8, 8), 120)
    for i, well in enumerate(wells.all_wells(96)):
        tiny.save(folder / f"{well.name}.png")
        for drop in (2, 3):
            if (well.name, drop) != ("C05", 2):
                tiny.save(folder / f"{well.name}{SPELLINGS[(i + drop) % 4]}{drop}.png")
    tiny.save(folder / "not_a_well.png")
    tiny.save(folder / "Q99_2.png")
    shutil.copy(folder / next(p.name for p in folder.glob("A01?2.png")), folder / "A01_2.tif")
    return folder


def test_every_drop_spelling_a_missing_drop_and_bad_names(tmp_path):
    files = archive.scan_plate(three_drop_plate(tmp_path / "PD"))
    good = [f for f in files if f.error is None]
    bad = {f.path.name: f.error for f in files if f.error is not None}
    assert len(good) == 96 * 3 - 1
    assert {f.plate_drops for f in files} == {3}
    by_id = {f.image_id: f for f in good}
    # Drop 1 keeps the id it always had; other drops carry the canonical _<drop> suffix whatever the spelling.
    assert by_id["PD/A01"].drop == 1 and by_id["PD/A01_2"].drop == 2 and by_id["PD/H12_3"].drop == 3
    spelled = {f.path.stem[3] for f in good if f.drop > 1}
    assert spelled == set(SPELLINGS)
    assert all(f.well == "A01" for f in good if f.image_id.startswith("PD/A01"))
    assert missing_wells(files) == ["C05_2"]
    assert set(bad) == {"not_a_well.png", "Q99_2.png", "A01_2.tif"}
    assert bad["not_a_well.png"].startswith("unknown well name") and "Q99" in bad["Q99_2.png"]
    assert "duplicate file for well A01_2" in bad["A01_2.tif"]


def test_drops_beyond_plate_json_are_quarantined_and_missing_drops_counted_without_it(tmp_path):
    folder = tmp_path / "P2"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "A01.png")
    Image.new("L", (8, 8)).save(folder / "A01_2.png")
    Image.new("L", (8, 8)).save(folder / "B01.png")
    files = archive.scan_plate(folder)  # no plate.json: drops = the largest found (2), format 96
    assert missing_wells(files)[:2] == ["A02", "A02_2"] and "B01_2" in missing_wells(files)
    (folder / "plate.json").write_text(json.dumps({"format": 96, "drops": 1}))
    [extra] = [f for f in archive.scan_plate(folder) if f.error]
    assert extra.path.name == "A01_2.png" and "plate.json says 1 drops" in extra.error


def test_column_first_and_numbered_wells_parse():
    assert wells.parse_well("01A").name == "A01" and wells.parse_well("12H", 96).name == "H12"
    assert wells.parse_well("13", 96).name == "B01"
    assert wells.image_id("P", "A01", "day3", 2) == "P@day3/A01_2"
    assert wells.image_id("P", "A01", "day3") == "P@day3/A01"


def test_the_pattern_setting_reads_real_sample_names(tmp_path, monkeypatch):
    plate = tmp_path / "97wo"
    plate.mkdir()
    for drop in (1, 2):
        shutil.copy(REAL_SAMPLES / f"dls_echo_97wo_01A_{drop}.jpg", plate / f"97wo_01A_{drop}.jpg")
    shutil.copy(REAL_SAMPLES / "dls_echo_97wo_01A_3.jpg", plate / "98xx_01A_3.jpg")  # another plate's name
    shutil.copy(REAL_SAMPLES / "gsk_10.jpeg", plate / "gsk_10.jpeg")  # does not parse
    # Without the setting these names are no wells.
    assert all(f.error for f in archive.scan_plate(plate))
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", "plate_well_drop")
    files = {f.path.name: f for f in archive.scan_plate(plate, naming=DataLayout.from_env().naming)}
    assert (files["97wo_01A_1.jpg"].image_id, files["97wo_01A_1.jpg"].well, files["97wo_01A_1.jpg"].drop) == \
        ("97wo/A01", "A01", 1)
    assert files["97wo_01A_2.jpg"].image_id == "97wo/A01_2" and files["97wo_01A_2.jpg"].error is None
    assert "names plate '98xx'" in files["98xx_01A_3.jpg"].error
    assert "does not match" in files["gsk_10.jpeg"].error
    # A lab's own regular expression, well numbers and column-first wells included.
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", r"(?P<plate>\w+?)-(?P<well>\w+?)-d(?P<drop>\d)")
    naming = DataLayout.from_env().naming
    assert naming.parse("97wo-12H-d3").well == "12H" and naming.parse("97wo-40-d1").well == "40"
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", r"(?P<plate>\w+)_(?P<colour>\w+)")
    with pytest.raises(ValueError, match="no named group 'well'"):
        DataLayout.from_env().naming
    with pytest.raises(ValueError, match="not a regular expression"):
        FileNaming.from_setting("(unclosed")


def test_the_split_keeps_every_drop_and_inspection_of_a_well_on_one_side():
    ids = [wells.image_id(f"P{p}", w.name, insp, d)
           for p in range(3) for w in wells.all_wells(96) for insp in (None, "20240301") for d in (1, 2, 3)]
    assert splits.well_key("P0@20240301/A01_3") == "P0/A01" == splits.well_key("P0/A01")
    sides = splits.assign_sides((i, None) for i in ids)
    per_well: dict[str, set[str]] = {}
    for image_id, side in sides.items():
        per_well.setdefault(splits.well_key(image_id), set()).add(side)
    assert len(per_well) == 3 * 96 and all(len(s) == 1 for s in per_well.values())
    assert set(sides.values()) == {"train", "val", "test"}  # the wells do spread over the sides
    assert splits.find_leaks((i, sides[i], None) for i in ids).none
    # The paper's split by image would scatter a well's drops: the leak finder sees it.
    by_image = splits.assign_sides(((i, None) for i in ids), splits.SplitConfig(by="image"))
    assert splits.find_leaks((i, by_image[i], None) for i in ids).wells


def test_the_plate_map_gives_each_drop_its_own_cell():
    from crystal_pipeline.reporting.plate_map import _grid_pos

    assert _grid_pos("B02", 96, 2, 3) == (1, 4)  # row B, well column 2 -> cells 3..5, drop 2 in the middle
    assert _grid_pos("B02", 96) == (1, 1)  # one drop per well: the grid is the plate's
    assert _grid_pos("B02", 96, 4, 3) is None and _grid_pos("Q99", 96) is None


def test_annotation_csv_may_name_the_drop(tmp_path):
    from crystal_pipeline.ingest.annotations import read_annotations

    path = tmp_path / "a.csv"
    path.write_text("plate_id,well,drop,annotator,attributes\n"
                    "PD,A01,,ann1,clear\n"        # no drop: drop 1
                    "PD,A01,2,ann1,crystal\n"
                    "PD,01A,3,ann1,precipitate\n"  # column-first well
                    "PD,A01,0,ann1,clear\n"        # drops are numbered from 1
                    "PD,A02,2,ann1,clear\n")       # no such image
    known = {"PD/A01", "PD/A01_2", "PD/A01_3"}
    table = read_annotations([path], {"PD": 96}, known)
    assert [(a.image_id, a.attributes) for a in table.annotations] == \
        [("PD/A01", ("clear",)), ("PD/A01_2", ("crystal",)), ("PD/A01_3", ("precipitate",))]
    reasons = [e.reason for e in table.errors]
    assert len(reasons) == 2 and "bad drop '0'" in reasons[0] and "unknown image 'PD/A02_2'" in reasons[1]
