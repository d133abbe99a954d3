"""Ingest over hand-made archives: what is quarantined, and that nothing else is lost."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.warehouse import Warehouse


def grey_png(path, value=128, size=(40, 30), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGBA" else (value, value, value, 200)).save(path)


@pytest.fixture
def bad_plate(tmp_path):
    plate = tmp_path / "raw" / "plates" / "P1"
    plate.mkdir(parents=True)
    (plate / "plate.json").write_text(json.dumps({"format": 96}))
    grey_png(plate / "A01.png")
    grey_png(plate / "A02.PNG", mode="RGBA")
    Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).save(plate / "A03.tif")
    (plate / "A04.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    (plate / "A05.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (plate / "A06.png").write_text("this is not an image\n")
    grey_png(plate / "Z99.png")
    grey_png(plate / "7.png")  # numeric well: A07 on a 96-well plate
    grey_png(plate / "A08.png")
    grey_png(plate / "8.png")  # the same well again
    (plate / "notes.txt").write_text("ignored")
    (plate / ".DS_Store").write_bytes(b"\0\0")
    return tmp_path / "raw"


def statuses(wh):
    frame = wh.query_df("SELECT image_id, status, error, well, well_index, plate_format FROM images ORDER BY image_id")
    return {r.image_id: r for r in frame.itertuples(index=False)}


def test_bad_files_are_quarantined_with_reasons_and_the_rest_go_on(tmp_path, bad_plate):
    wh = Warehouse(tmp_path / "w.duckdb")
    files = archive.scan_archive(bad_plate)
    summary = ingest_files(wh, files, workers=2)
    rows = statuses(wh)
    assert summary.found == len(rows) == 10  # notes.txt and .DS_Store are not images
    ok = {k for k, r in rows.items() if r.status == "ok"}
    assert ok == {"P1/A01", "P1/A02", "P1/A03", "P1/A07", "P1/A08"}
    assert "empty" in rows["P1/A04"].error
    assert "truncat" in rows["P1/A05"].error
    assert rows["P1/A06"].status == "quarantined"
    assert "unknown well" in rows["P1/Z99.png"].error
    # Two files name well A08; the first in name order (8.png) wins, the other is quarantined.
    assert "duplicate" in rows["P1/A08.png"].error
    assert rows["P1/A07"].well_index == 7 and rows["P1/A07"].plate_format == 96
    modes = dict(wh.query_df("SELECT image_id, mode FROM images WHERE status='ok'").itertuples(index=False))
    assert modes["P1/A02"] == "RGBA" and modes["P1/A03"].startswith("I")


def test_second_run_changes_nothing_and_a_new_plate_adds_only_its_rows(tmp_path, bad_plate):
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(bad_plate), workers=1)
    before = wh.query_df("SELECT * FROM images ORDER BY image_id")
    again = ingest_files(wh, archive.scan_archive(bad_plate), workers=1)
    assert (again.new, again.changed, again.unchanged) == (0, 0, 10)
    after = wh.query_df("SELECT * FROM images ORDER BY image_id")
    assert before.equals(after)

    for well in ("A01", "B02", "H12"):
        grey_png(bad_plate / "plates" / "P2" / f"{well}.png")
    third = ingest_files(wh, archive.scan_archive(bad_plate), workers=1)
    assert (third.new, third.changed, third.unchanged) == (3, 0, 10)
    p2 = wh.query_df("SELECT image_id, plate_format FROM images WHERE plate_id = 'P2' ORDER BY image_id")
    assert list(p2["image_id"]) == ["P2/A01", "P2/B02", "P2/H12"] and set(p2["plate_format"]) == {96}
    unchanged = wh.query_df("SELECT * FROM images WHERE plate_id = 'P1' ORDER BY image_id")
    assert unchanged.equals(before)


def test_a_changed_file_is_read_again(tmp_path, bad_plate):
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(bad_plate), workers=1)
    target = bad_plate / "plates" / "P1" / "A04.png"  # was empty: the imager re-wrote it
    grey_png(target)
    os.utime(target, ns=(10**18, 10**18))
    result = ingest_files(wh, archive.scan_archive(bad_plate), workers=1)
    assert result.changed == 1
    assert statuses(wh)["P1/A04"].status == "ok"


def test_inspections_and_format_inference(tmp_path):
    raw = tmp_path / "raw"
    grey_png(raw / "plates" / "P3" / "day1" / "A01.png")
    grey_png(raw / "plates" / "P3" / "day7" / "A01.png")
    grey_png(raw / "plates" / "P3" / "day7" / "P24.png")  # needs a 384-well plate
    found = {f.image_id: f for f in archive.scan_archive(raw)}
    assert set(found) == {"P3@day1/A01", "P3@day7/A01", "P3@day7/P24"}
    assert found["P3@day1/A01"].plate_format == 96 and found["P3@day7/A01"].plate_format == 384
    assert found["P3@day7/P24"].plate_key == "P3@day7"


def test_missing_plates_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo-archive"):
        archive.scan_archive(tmp_path / "nowhere")
