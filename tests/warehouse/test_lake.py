"""The DuckLake backend: what only a lake does (tests/warehouse/test_warehouse.py runs the
shared behaviour on both backends). Writers in separate processes commit at once, a
conflicting commit runs again, a killed writer leaves nothing, readers see snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from crystal_pipeline.warehouse import Warehouse, lake
from crystal_pipeline.warehouse.schema import SCHEMA
from tests.crash_harness import killed_at
from tests.warehouse.conftest import new_lake
from tests.warehouse.test_warehouse import _plate_frame

WRITER = """
import json, sys
from pathlib import Path
from crystal_pipeline.warehouse import LakeTarget, Warehouse
from crystal_pipeline.warehouse.predictions import replace_plate_predictions
from tests.warehouse.test_warehouse import _plate_frame
spec = json.loads(sys.argv[1])
wh = Warehouse.in_lake(LakeTarget(spec["catalog"], Path(spec["data_path"])))
for plate in spec["plates"]:
    replace_plate_predictions(wh, plate, None, "v1", _plate_frame(plate, "v1", spec["wells"], spec["prob"]))
"""


def _spec(target, **fields) -> str:
    return json.dumps({"catalog": target.catalog, "data_path": str(target.data_path), **fields})


@pytest.fixture
def lake_warehouse(lake_server, tmp_path) -> Warehouse:
    wh = Warehouse.in_lake(new_lake(lake_server, tmp_path), lock_timeout_s=5)
    wh.ensure_schema()
    return wh


def test_the_lake_dialect_drops_only_what_ducklake_refuses():
    ddl = {statement.split("(")[0].split()[-1]: lake.lake_ddl(statement) for statement in SCHEMA
           if statement.strip().startswith("CREATE TABLE")}
    assert "PRIMARY KEY" not in "".join(ddl.values()) and "FLOAT[10]" not in ddl["predictions"]
    assert "probs FLOAT[] NOT NULL" in ddl["predictions"] and "is_production BOOLEAN NOT NULL," in ddl["models"]
    assert "imaging VARCHAR DEFAULT 'visible'" in ddl["images"]  # a literal default is kept


def test_concurrent_plate_writers_in_separate_processes_lose_nothing(lake_warehouse):
    """Four processes write 24 plates at once, two of them re-running the same six plates
    (a re-run replaces): every prediction row is present exactly once."""
    target = lake_warehouse.lake
    jobs = [[f"P{w}{i}" for i in range(6)] for w in range(3)] + [[f"P0{i}" for i in range(6)]]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, _spec(target, plates=plates, wells=96, prob=0.5)],
                              stderr=subprocess.PIPE, text=True) for plates in jobs]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    counts = lake_warehouse.query_df("SELECT plate_id, count(*) AS n, count(DISTINCT image_id) AS ids "
                                     "FROM predictions GROUP BY plate_id ORDER BY plate_id")
    assert len(counts) == 18 and set(counts["n"]) == {96} and set(counts["ids"]) == {96}
    snapshots = lake_warehouse.scalar("SELECT count(*) FROM ducklake_snapshots('lake')")
    assert snapshots >= 24  # each plate's write is a commit of its own


def test_a_conflicting_commit_is_run_again_on_the_new_snapshot(lake_warehouse):
    """Two writers replace the same plate at once: DuckLake refuses the later commit (both
    deleted from one data file); ``write`` runs its work again and the plate ends whole."""
    from crystal_pipeline.warehouse import replace_rows
    from crystal_pipeline.warehouse.predictions import replace_plate_predictions

    wh = lake_warehouse
    replace_plate_predictions(wh, "P1", None, "v1", _plate_frame("P1", "v1", 50, 0.1))
    attempts = []

    def replace_while_another_commits(con):
        attempts.append(len(attempts) + 1)
        replace_rows(con, "predictions", _plate_frame("P1", "v1", 50, 0.3), where="plate_id = ?", params=["P1"])
        if len(attempts) == 1:  # the other writer commits its replace of P1 before this one does
            thread = threading.Thread(target=replace_plate_predictions,
                                      args=(wh, "P1", None, "v1", _plate_frame("P1", "v1", 50, 0.2)))
            thread.start()
            thread.join()

    wh.write(replace_while_another_commits, scope="test-first-writer")
    assert attempts == [1, 2]
    rows = wh.query_df("SELECT crystal_prob, count(*) AS n FROM predictions GROUP BY crystal_prob")
    assert rows.values.tolist() == [[0.3, 50]]


def test_a_writer_killed_before_its_commit_leaves_the_plate_as_it_was(lake_warehouse):
    target = lake_warehouse.lake
    from crystal_pipeline.warehouse.predictions import replace_plate_predictions

    replace_plate_predictions(lake_warehouse, "P1", None, "v1", _plate_frame("P1", "v1", 96, 0.1))
    code = WRITER.replace("spec = json.loads(sys.argv[1])", f"spec = json.loads({_spec(target, plates=['P1', 'P2'], wells=96, prob=0.9)!r})")
    killed_at("warehouse.replace_rows.before_commit", code)
    rows = lake_warehouse.query_df("SELECT plate_id, crystal_prob, count(*) AS n FROM predictions "
                                   "GROUP BY ALL ORDER BY plate_id")
    assert rows.values.tolist() == [["P1", 0.1, 96]]  # the old rows whole; nothing of the killed run


def test_a_reader_sees_committed_snapshots_only(lake_warehouse):
    from crystal_pipeline.warehouse import replace_rows

    wh = lake_warehouse
    with wh.connect(read_only=True) as reader:
        reader.execute("BEGIN TRANSACTION")
        before = reader.execute("SELECT count(*) FROM predictions").fetchone()[0]
        with wh.transaction() as writer:
            replace_rows(writer, "predictions", _plate_frame("P1", "v1", 20, 0.5), where="plate_id = 'P1'")
            assert reader.execute("SELECT count(*) FROM predictions").fetchone()[0] == before  # uncommitted
        assert reader.execute("SELECT count(*) FROM predictions").fetchone()[0] == before  # its snapshot
        reader.execute("COMMIT")
    assert wh.scalar("SELECT count(*) FROM predictions") == before + 20


def test_a_lake_without_a_catalog_says_what_to_set(tmp_path, monkeypatch):
    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.warehouse import LakeUnavailable, open_warehouse

    monkeypatch.setenv("CRYSTAL_WAREHOUSE", "ducklake")
    monkeypatch.delenv("CRYSTAL_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("CRYSTAL_POSTGRES_URL", raising=False)
    with pytest.raises(LakeUnavailable, match="CRYSTAL_WAREHOUSE_URL"):
        open_warehouse(DataLayout.under(tmp_path))
    monkeypatch.setenv("CRYSTAL_WAREHOUSE", "sqlite")
    with pytest.raises(ValueError, match="file, ducklake"):
        DataLayout.under(tmp_path)
