"""``crystal-pipeline warehouse migrate``: file -> lake -> file keeps every table's rows and content."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from crystal_pipeline.cli import main
from crystal_pipeline.ingest.archive import scan_plate
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import annotations as annotation_table
from crystal_pipeline.warehouse import labels as label_table
from crystal_pipeline.warehouse import models as model_table
from crystal_pipeline.warehouse import predictions as prediction_table
from crystal_pipeline.warehouse.migrate import MigrationError, migrate, table_digest
from crystal_pipeline.warehouse.schema import TABLES
from tests.warehouse.conftest import new_lake
from tests.warehouse.test_warehouse import _plate_frame


def _filled_file_warehouse(path, archive) -> Warehouse:
    """Every table holds rows, NULLs in integer and list columns included (what pandas would mangle)."""
    wh = Warehouse(path)
    for plate_dir in sorted(p for p in (archive / "plates").iterdir() if p.is_dir()):
        ingest_files(wh, scan_plate(plate_dir), workers=1)
    ids = list(wh.query_df("SELECT image_id FROM images ORDER BY image_id")["image_id"][:20])
    votes = pd.DataFrame({"image_id": ids, "annotator": "expert1", "attributes": [["Clear"]] * 10 + [["Crystal", "Clear"]] * 10,
                          "source_file": "a.csv", "source_line": range(2, 22), "source_mtime_ns": [None] * 5 + [7] * 15})
    errors = pd.DataFrame({"source_file": ["a.csv"], "source_line": [None], "reason": ["no header"], "raw": [None]})
    annotation_table.replace_annotations(wh, votes, errors)
    label_table.replace_consensus_labels(wh, pd.DataFrame({
        "image_id": ids, "class_id": 1, "class_name": "clear", "has_crystal": False, "n_annotators": 1,
        "agreement": 1.0, "split": "train"}))
    model_table.insert_model(wh, model_version="m1", created_at=datetime(2026, 1, 1), preset="smoke", resolution=64,
                             path="m1.pt", sha256="s1", trained_on="synthetic", val_accuracy=None,
                             crystal_recall=0.9, crystal_auc=0.8, crystal_threshold=0.1, make_production=True)
    prediction_table.replace_plate_predictions(wh, "SYN0001", None, "m1", _plate_frame("SYN0001", "m1", 96, 0.25))
    return wh


def test_file_to_lake_and_back_keeps_every_table(lake_server, tmp_path, tiny_archive, monkeypatch, capsys):
    source = _filled_file_warehouse(tmp_path / "a" / "warehouse.duckdb", tiny_archive)
    lake = new_lake(lake_server, tmp_path)
    monkeypatch.setenv("CRYSTAL_WAREHOUSE_URL", lake.catalog)
    monkeypatch.setenv("CRYSTAL_LAKE_DATA_PATH", str(lake.data_path))

    assert main(["warehouse", "migrate", "--to", "ducklake", "--data-dir", str(tmp_path / "a")]) == 0
    assert "every table equal" in capsys.readouterr().out
    assert main(["warehouse", "migrate", "--to", "file", "--data-dir", str(tmp_path / "b")]) == 0
    back = Warehouse(tmp_path / "b" / "warehouse.duckdb")
    for table in TABLES:
        rows, digest = table_digest(source, table)
        assert rows > 0, table
        assert table_digest(back, table) == (rows, digest), table
        assert table_digest(Warehouse.in_lake(lake), table) == (rows, digest), table
    assert model_table.production_model(back)["model_version"] == "m1"
    # Run again: the lake already holds exactly these rows, so nothing is copied twice.
    assert main(["warehouse", "migrate", "--to", "ducklake", "--data-dir", str(tmp_path / "a")]) == 0
    assert "nothing to copy" in capsys.readouterr().out


def test_a_target_holding_other_rows_is_refused(lake_server, tmp_path, tiny_archive):
    source = _filled_file_warehouse(tmp_path / "warehouse.duckdb", tiny_archive)
    lake = Warehouse.in_lake(new_lake(lake_server, tmp_path))
    lake.ensure_schema()
    prediction_table.replace_plate_predictions(lake, "OTHER", None, "m9", _plate_frame("OTHER", "m9", 3, 0.5))
    with pytest.raises(MigrationError, match="not empty: .*predictions \\(3 rows\\)"):
        migrate(source, lake, progress=lambda line: None)
    assert lake.scalar("SELECT count(*) FROM images") == 0  # nothing was merged in
