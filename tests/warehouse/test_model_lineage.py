"""models.parent_version and models.n_train_labels: written on insert, added to an old warehouse."""

from __future__ import annotations

from datetime import datetime

import duckdb

from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import models as model_table


def _insert(wh, version, **extra):
    # One sha256 per file: insert_model registers a file (by its sha256) once.
    model_table.insert_model(wh, model_version=version, created_at=datetime(2026, 1, 1), preset="finetune",
                             resolution=64, path=f"{version}.pt", sha256=f"sha-{version}", trained_on="synthetic",
                             val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.8, crystal_threshold=0.1,
                             make_production=False, **extra)


def test_an_old_warehouse_gains_the_lineage_columns_and_stores_them(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # the models table of a warehouse from before issue 10
    con.execute("CREATE TABLE models (model_version VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
                "preset VARCHAR, resolution INTEGER, path VARCHAR NOT NULL, sha256 VARCHAR, trained_on VARCHAR, "
                "val_accuracy DOUBLE, crystal_recall DOUBLE, crystal_auc DOUBLE, crystal_threshold DOUBLE, "
                "is_production BOOLEAN NOT NULL DEFAULT FALSE, temperature DOUBLE)")
    con.execute("INSERT INTO models (model_version, created_at, path, is_production) VALUES ('old', now(), 'm.pt', TRUE)")
    con.close()
    wh = Warehouse(path)
    wh.ensure_schema()
    wh.ensure_schema()  # idempotent
    old = model_table.model_by_version(wh, "old")
    assert old["parent_version"] is None and old["n_train_labels"] is None
    _insert(wh, "child", parent_version="old", n_train_labels=300)
    _insert(wh, "scratch")
    child, scratch = model_table.model_by_version(wh, "child"), model_table.model_by_version(wh, "scratch")
    assert child["parent_version"] == "old" and int(child["n_train_labels"]) == 300
    assert scratch["parent_version"] is None
