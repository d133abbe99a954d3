"""UV pictures in the raw archive: ``<well>[_<drop>].uv.<ext>`` beside the visible picture."""

import duckdb
import pytest

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.ingest.naming import FileNaming
from crystal_pipeline.plates.labelling import labelled_files, missing_wells
from crystal_pipeline.warehouse import ImageScope, Warehouse
from crystal_pipeline.warehouse import images as image_table
from tests.ingest.test_image_files import grey_png


def _plate(raw, names):
    for value, name in enumerate(names):
        grey_png(raw / "plates" / "P1" / f"{name}.png", value=20 + value)
    (raw / "plates" / "P1" / "plate.json").write_text('{"format": 96, "drops": 2}')


def test_a_uv_pair_is_ingested_beside_its_visible_picture_and_a_lone_uv_picture_is_quarantined(tmp_path):
    raw = tmp_path / "raw"
    _plate(raw, ["A01", "A01.uv", "A02_2", "A02_2.uv", "A03", "B01.uv"])
    wh = Warehouse(tmp_path / "w.duckdb")
    summary = ingest_files(wh, archive.scan_archive(raw))
    assert summary.found == 6 and summary.quarantined_new == 1
    rows = wh.query_df("SELECT image_id, imaging, status, error, well, \"drop\" FROM images ORDER BY image_id")
    got = {r.image_id: (r.imaging, r.status) for r in rows.itertuples()}
    assert got == {"P1/A01": ("visible", "ok"), "P1/A01.uv": ("uv", "ok"), "P1/A02_2": ("visible", "ok"),
                   "P1/A02_2.uv": ("uv", "ok"), "P1/A03": ("visible", "ok"),
                   "P1/B01.uv.png": ("uv", "quarantined")}
    lone = rows.set_index("image_id").loc["P1/B01.uv.png"]
    assert "without its visible picture" in lone.error and lone.well == "B01"
    # The pairs are found by id; the plate read leaves accepted UV rows out but keeps the lone one.
    assert image_table.uv_partners(wh) == {"P1/A01": str(raw / "plates/P1/A01.uv.png"),
                                           "P1/A02_2": str(raw / "plates/P1/A02_2.uv.png")}
    plate = image_table.images_in(wh, ImageScope.of_plate("P1", None))
    assert sorted(plate["image_id"]) == ["P1/A01", "P1/A02_2", "P1/A03", "P1/B01.uv.png"]
    assert list(image_table.quarantined(wh)["image_id"]) == ["P1/B01.uv.png"]
    # Labelling accounts for the visible pictures and the lone UV one (imaged, quarantined: not missing).
    files = archive.scan_archive(raw)
    assert sorted(f.image_id for f in labelled_files(files)) == sorted(plate["image_id"])
    missing = missing_wells(files)
    assert "B01" not in missing and "A01" not in missing and "A01_2" in missing and len(missing) == 96 * 2 - 4


def test_a_second_uv_picture_of_a_drop_is_a_duplicate_and_a_lab_pattern_names_its_imaging(tmp_path):
    raw = tmp_path / "raw"
    _plate(raw, ["A01", "A01.uv", "A01.UV"])
    files = archive.scan_archive(raw)
    by_id = {f.image_id: f for f in files}
    assert by_id["P1/A01.uv"].imaging == "uv" and by_id["P1/A01.uv"].error is None  # the first by name
    assert [f.error for f in files if f.image_id.endswith(".png")] == [
        "duplicate uv file for well A01 (already A01.UV.png)"]
    naming = FileNaming.from_setting(r"(?P<well>[A-H]\d\d)_(?P<imaging>vis|UV)")
    assert naming.parse("A01_UV").imaging == "uv" and naming.parse("A01_vis").imaging == "visible"
    with pytest.raises(ValueError):
        FileNaming.from_setting(r"(?P<well>[A-H]\d\d)_(?P<light>UV)")


def test_a_warehouse_from_before_uv_gains_imaging_visible_in_every_row(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE images (image_id VARCHAR PRIMARY KEY, plate_id VARCHAR NOT NULL, inspection VARCHAR, "
                "plate_format INTEGER, well VARCHAR, well_index INTEGER, \"row\" INTEGER, col INTEGER, "
                "path VARCHAR NOT NULL, sha256 VARCHAR, width INTEGER, height INTEGER, mode VARCHAR, "
                "status VARCHAR NOT NULL, error VARCHAR, source VARCHAR NOT NULL, file_size BIGINT, "
                "file_mtime_ns BIGINT, ingested_at TIMESTAMP NOT NULL)")
    con.execute("INSERT INTO images VALUES ('P/A01', 'P', NULL, 96, 'A01', 0, 0, 0, '/x/A01.png', NULL, 8, 8, 'L', "
                "'ok', NULL, 'archive', 1, 1, now())")
    con.close()
    wh = Warehouse(path)
    wh.ensure_schema()
    assert wh.query_df("SELECT imaging FROM images")["imaging"].tolist() == ["visible"]
    assert list(image_table.images_in(wh, ImageScope.of_plate("P", None))["image_id"]) == ["P/A01"]
