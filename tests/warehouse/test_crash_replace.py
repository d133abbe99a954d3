"""SIGKILL inside the one-transaction replace (annotations refresh, predictions write), then re-run.

DuckDB's transaction must leave the old rows exactly as they were after the kill, and a
plain re-run must land exactly the new rows once (issue 18, docs/reliability.md).
"""

from __future__ import annotations

import hashlib

import pytest

from crystal_pipeline.warehouse import Warehouse
from tests.crash_harness import killed_at, run_clean

#: Runs in the parent and in the children: writes generation ``GEN`` of table kind ``KIND``.
_WRITE = '''
import datetime
import pandas as pd
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse.annotations import replace_annotations
from crystal_pipeline.warehouse.predictions import PREDICTION_COLUMNS, replace_plate_predictions

def write(path, kind, gen):
    wh = Warehouse(path)
    wh.ensure_schema()
    n = {"old": 40, "new": 30}[gen]
    if kind == "annotations":
        votes = pd.DataFrame({
            "image_id": [f"img{i:03d}" for i in range(n)], "annotator": [f"{gen}-expert"] * n,
            "attributes": [["Crystals"] if i % 3 else ["Clear"] for i in range(n)],
            "source_file": [f"{gen}.csv"] * n, "source_line": list(range(2, n + 2)), "source_mtime_ns": [n] * n})
        errors = pd.DataFrame({"source_file": [f"{gen}.csv"], "source_line": [1], "reason": [f"{gen} header"],
                               "raw": ["x"]})
        replace_annotations(wh, votes, errors)
        return
    at = datetime.datetime(2026, 1, 1 if gen == "old" else 2)
    rows = []
    for plate in (["P1", "P2"] if gen == "old" else ["P1"]):  # P2's rows are out of the new write's scope
        for i in range(n):
            probs = [0.0] * 10
            probs[(i + (gen == "new")) % 10] = 1.0
            best = probs.index(1.0)
            rows.append(dict(image_id=f"{plate}-{i:03d}", plate_id=plate, inspection="d1", well=f"A{i}",
                             model_version="v1", class_id=best + 1, class_name=f"c{best + 1}",
                             crystal_prob=float(i % 2), probs=probs, marco_class="clear", predicted_at=at))
    frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    for plate, part in frame.groupby("plate_id"):
        replace_plate_predictions(wh, plate, "d1", "v1", part)
'''

_TABLES = {"annotations": ("annotations", "annotation_errors"), "predictions": ("predictions",)}
POINTS = ("warehouse.replace_rows.after_delete", "warehouse.replace_rows.before_commit")


def _write(path, kind: str, gen: str) -> None:
    scope: dict = {}
    exec(_WRITE, scope)
    scope["write"](str(path), kind, gen)


def _child(path, kind: str, gen: str) -> str:
    return _WRITE + f"\nwrite({str(path)!r}, {kind!r}, {gen!r})\n"


def _contents(path, kind: str) -> dict[str, tuple[int, str]]:
    """Per table: row count and a hash of every row (sorted), to compare two warehouses."""
    wh = Warehouse(path)
    out = {}
    for table in _TABLES[kind]:
        frame = wh.query_df(f"SELECT * FROM {table} ORDER BY ALL")
        out[table] = (len(frame), hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest())
    return out


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """Never-killed runs: the old generation, and the old then the new one."""
    root = tmp_path_factory.mktemp("never_killed")
    out = {}
    for kind in _TABLES:
        _write(root / f"{kind}_old.duckdb", kind, "old")
        _write(root / f"{kind}_new.duckdb", kind, "old")
        _write(root / f"{kind}_new.duckdb", kind, "new")
        out[kind] = (_contents(root / f"{kind}_old.duckdb", kind), _contents(root / f"{kind}_new.duckdb", kind))
    return out


@pytest.mark.parametrize("kind", sorted(_TABLES))
def test_a_kill_inside_the_replace_keeps_the_old_rows_and_a_rerun_lands_the_new_once(tmp_path, expected, kind):
    old, new = expected[kind]
    assert old != new
    path = tmp_path / "warehouse.duckdb"
    _write(path, kind, "old")
    for point in POINTS:
        killed_at(point, _child(path, kind, "new"))
        assert _contents(path, kind) == old, point  # the killed transaction left nothing behind
    run_clean(_child(path, kind, "new"))
    assert _contents(path, kind) == new  # exactly the new rows, once (no duplicates)
