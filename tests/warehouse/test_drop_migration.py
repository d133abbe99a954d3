"""images.drop (issue 11): a warehouse from before drops migrates in place, and re-ingesting an
existing single-drop archive gives the same image ids and changes no row."""

from __future__ import annotations

from pathlib import Path

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.warehouse import Warehouse



def test_old_warehouse_migrates_and_reingest_changes_nothing(tmp_path, tiny_archive):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    files = archive.scan_archive(tiny_archive)
    # Image ids of a single-drop archive are what they always were: <plate>/<file stem>.
    assert {f.image_id for f in files if f.error is None} == \
        {f"{f.path.parent.name}/{f.path.stem}" for f in files if f.error is None}
    ingest_files(wh, files, workers=1)
    # Make it a warehouse from before drops: the columns did not exist.
    with wh.transaction() as con:
        con.execute('ALTER TABLE images DROP COLUMN "drop"')
        con.execute("ALTER TABLE images DROP COLUMN plate_drops")
    before = wh.query_df("SELECT * FROM images ORDER BY image_id")
    assert "drop" not in before.columns
    summary = ingest_files(wh, archive.scan_archive(tiny_archive), workers=1)  # ensure_schema migrates
    assert (summary.new, summary.changed, summary.unchanged) == (0, 0, len(files))
    after = wh.query_df("SELECT * FROM images ORDER BY image_id")
    assert set(after["drop"]) == {1} and set(after["plate_drops"]) == {1}
    assert after.drop(columns=["drop", "plate_drops"]).equals(before)
    assert Path(after["path"].iloc[0]).exists()
