import subprocess
import sys
import textwrap
import time

import pytest

from crystal_pipeline.warehouse import Warehouse, WarehouseLocked

HOLD_LOCK = textwrap.dedent("""
    import duckdb, sys, time
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def hold_lock(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_schema_has_the_contract_tables(any_warehouse):
    any_warehouse.ensure_schema()
    any_warehouse.ensure_schema()  # idempotent, on both backends
    tables = set(any_warehouse.query_df("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_catalog = current_database()")["table_name"])
    assert {"images", "annotations", "annotation_errors", "consensus_labels", "models", "predictions"} <= tables
    assert any_warehouse.table_count() == len(tables)


def test_readers_and_writers_wait_for_another_process_lock(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb", lock_timeout_s=30)
    wh.ensure_schema()
    proc = hold_lock(wh.path, 1.5)
    started = time.monotonic()
    with wh.transaction() as con:
        con.execute("INSERT INTO annotation_errors VALUES ('f.csv', 1, 'r', 'raw')")
    waited = time.monotonic() - started
    proc.wait()
    assert waited > 0.5  # it really was refused first, then retried
    proc = hold_lock(wh.path, 1.0)
    assert wh.scalar("SELECT count(*) FROM annotation_errors") == 1
    proc.wait()


def test_gives_up_with_a_clear_error_after_the_timeout(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb", lock_timeout_s=0.3)
    wh.ensure_schema()
    proc = hold_lock(wh.path, 3)
    try:
        with pytest.raises(WarehouseLocked, match="stayed locked"):
            with wh.connect():
                pass
    finally:
        proc.kill()
        proc.wait()


def test_an_exception_rolls_the_unit_of_work_back(any_warehouse):
    any_warehouse.ensure_schema()
    with pytest.raises(RuntimeError):
        with any_warehouse.transaction() as con:
            con.execute("INSERT INTO annotation_errors VALUES ('f.csv', 1, 'r', 'raw')")
            raise RuntimeError("boom")

    def insert_then_fail(con):
        con.execute("INSERT INTO annotation_errors VALUES ('g.csv', 1, 'r', 'raw')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        any_warehouse.write(insert_then_fail, scope="annotation_errors")  # not a conflict: raised at once, not retried
    assert any_warehouse.scalar("SELECT count(*) FROM annotation_errors") == 0


def test_exception_rolls_back_and_releases_the_file(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb", lock_timeout_s=5)
    wh.ensure_schema()
    with pytest.raises(RuntimeError):
        with wh.transaction() as con:
            con.execute("INSERT INTO annotation_errors VALUES ('f.csv', 1, 'r', 'raw')")
            raise RuntimeError("boom")
    # Another process can take the write lock at once: the connection was closed.
    out = subprocess.run([sys.executable, "-c", "import duckdb,sys; c=duckdb.connect(sys.argv[1]); "
                          "print(c.execute('select count(*) from annotation_errors').fetchone()[0])", str(wh.path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_replace_rows_by_scope_by_key_and_all_or_nothing(any_warehouse):
    import pandas as pd

    from crystal_pipeline.warehouse import replace_rows

    wh = any_warehouse
    wh.ensure_schema()
    errors = pd.DataFrame({"raw": ["x", "y", "z"], "reason": ["r"] * 3, "source_line": [1, 2, 3],
                           "source_file": ["a.csv", "a.csv", "b.csv"]})  # column order is not the table's
    with wh.transaction() as con:
        replace_rows(con, "annotation_errors", errors)
    # Scope: only b.csv's rows are replaced.
    with wh.transaction() as con:
        replace_rows(con, "annotation_errors", errors.iloc[:0], where="source_file = ?", params=["b.csv"])
    assert sorted(wh.query_df("SELECT raw FROM annotation_errors")["raw"]) == ["x", "y"]
    # Key: rows whose key appears in the frame are replaced, the others kept.
    with wh.transaction() as con:
        replace_rows(con, "annotation_errors", pd.DataFrame({"source_file": ["a.csv"], "source_line": [9],
                                                             "reason": ["new"], "raw": ["x"]}), key="raw")
    rows = wh.query_df("SELECT raw, reason, source_line FROM annotation_errors ORDER BY raw")
    assert rows.values.tolist() == [["x", "new", 9], ["y", "r", 2]]
    # A failing insert (NULL into a NOT NULL column) rolls the delete back too.
    bad = pd.DataFrame({"source_file": [None], "source_line": [1], "reason": ["r"], "raw": ["q"]})
    with pytest.raises(Exception):
        with wh.transaction() as con:
            replace_rows(con, "annotation_errors", bad)
    assert wh.scalar("SELECT count(*) FROM annotation_errors") == 2


def test_a_warehouse_from_before_calibration_gains_the_temperature_column(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE models (model_version VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
                "preset VARCHAR, resolution INTEGER, path VARCHAR NOT NULL, sha256 VARCHAR, trained_on VARCHAR, "
                "val_accuracy DOUBLE, crystal_recall DOUBLE, crystal_auc DOUBLE, crystal_threshold DOUBLE, "
                "is_production BOOLEAN NOT NULL DEFAULT FALSE)")
    con.execute("INSERT INTO models (model_version, created_at, path, crystal_threshold, is_production) "
                "VALUES ('old', now(), 'm.pt', 0.07, TRUE)")
    con.close()
    wh = Warehouse(path)
    wh.ensure_schema()
    wh.ensure_schema()  # idempotent
    from crystal_pipeline.warehouse import models as model_table

    row = model_table.production_model(wh)
    assert row["crystal_threshold"] == 0.07
    assert row["temperature"] is None or row["temperature"] != row["temperature"]  # NULL (NaN in pandas): T = 1


def test_a_warehouse_from_before_marco_fills_marco_class_from_stored_probs(tmp_path):
    import duckdb
    import numpy as np

    from crystal_pipeline.classes import marco_outcome
    from crystal_pipeline.warehouse import predictions as prediction_table

    rng = np.random.default_rng(5)
    probs = [[0.4, 0.05, 0.3, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0],  # arg-max clear, MARCO crystals
             [0.1, 0.1, 0.0, 0.3, 0.0, 0.1, 0.0, 0.0, 0.2, 0.2],  # other
             *rng.dirichlet(np.ones(10), size=30).round(6).tolist()]
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE predictions (image_id VARCHAR NOT NULL, plate_id VARCHAR NOT NULL, inspection VARCHAR, "
                "well VARCHAR, model_version VARCHAR NOT NULL, class_id INTEGER NOT NULL, class_name VARCHAR NOT "
                "NULL, crystal_prob DOUBLE NOT NULL, probs FLOAT[10] NOT NULL, predicted_at TIMESTAMP NOT NULL)")
    for i, p in enumerate(probs):
        con.execute("INSERT INTO predictions VALUES (?, 'P1', NULL, ?, 'v1', 1, 'clear', 0.5, ?, now())",
                    [f"P1/W{i:02d}", f"W{i:02d}", p])
    con.close()
    wh = Warehouse(path)
    wh.ensure_schema()
    wh.ensure_schema()  # idempotent
    frame = prediction_table.plate_predictions(wh, "P1", None, "v1")
    assert list(frame["marco_class"][:2]) == ["crystals", "other"]
    stored = {row.image_id: np.asarray(row.probs, dtype=np.float32) for row in frame.itertuples()}
    assert list(frame["marco_class"]) == [marco_outcome(stored[i]) for i in frame["image_id"]]
    assert len(set(frame["marco_class"])) >= 3


def _plate_frame(plate: str, model: str, n: int, prob: float):
    import numpy as np
    import pandas as pd

    return pd.DataFrame({
        "image_id": [f"{plate}/W{i:04d}" for i in range(n)], "plate_id": plate, "inspection": None,
        "well": [f"W{i:04d}" for i in range(n)], "model_version": model, "class_id": 1, "class_name": "clear",
        "crystal_prob": prob, "probs": [np.full(10, 0.1, dtype=np.float32) for _ in range(n)],
        "marco_class": "clear", "predicted_at": pd.Timestamp("2026-12-03 12:00")})


def test_plate_predictions_and_models_round_trip_on_both_backends(any_warehouse):
    from datetime import datetime

    import numpy as np

    from crystal_pipeline.warehouse import models as model_table
    from crystal_pipeline.warehouse import predictions as prediction_table

    wh = any_warehouse
    wh.ensure_schema()
    prediction_table.replace_plate_predictions(wh, "P1", None, "v1", _plate_frame("P1", "v1", 40, 0.2))
    prediction_table.replace_plate_predictions(wh, "P1", None, "v1", _plate_frame("P1", "v1", 30, 0.7))  # a re-run
    prediction_table.replace_plate_predictions(wh, "P2", None, "v1", _plate_frame("P2", "v1", 5, 0.1))
    rows = prediction_table.plate_predictions(wh, "P1", None, "v1")
    assert len(rows) == 30 and set(rows["crystal_prob"]) == {0.7}  # replaced, never duplicated
    assert np.allclose(np.asarray(rows["probs"].iloc[0], dtype=np.float32), 0.1) and len(rows["probs"].iloc[0]) == 10
    assert wh.scalar("SELECT count(*) FROM predictions") == 35
    for version, production in (("a", True), ("b", False)):
        model_table.insert_model(wh, model_version=version, created_at=datetime(2026, 1, 1), preset="smoke",
                                 resolution=64, path=f"{version}.pt", sha256=f"sha-{version}", trained_on="synthetic",
                                 val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.8, crystal_threshold=0.1,
                                 make_production=production)
    assert model_table.production_model(wh)["model_version"] == "a"
    assert bool(model_table.model_by_version(wh, "b")["is_production"]) is False
