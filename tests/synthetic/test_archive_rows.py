"""The archive writer streams its CSV rows plate by plate (issue 17 item 3: peak memory flat
in the archive's size). Memory figures belong to bench/ and docs/benchmarks.md; these tests
check the behaviour that keeps it flat: a finished plate's rows are on disk and no longer
referenced by the generator when the next plate finishes."""

from __future__ import annotations

import csv
import gc
import weakref

import numpy as np
import pytest

from crystal_pipeline.synthetic import annotation_files, write_archive
from crystal_pipeline.synthetic import archive as archive_module


@pytest.mark.parametrize("workers", [1, 2])
def test_each_plates_rows_are_written_and_let_go_as_it_finishes(tmp_path, monkeypatch, workers):
    """When a plate finishes, every earlier plate's rows are already in staging files and none
    of its row objects is alive any more (weak references to its drawn shapes are dead): not
    in the generator's results, not in a finished future of the process pool."""
    shapes: dict[str, list[weakref.ref]] = {}
    seen: list[dict] = []
    add_plate = archive_module._PlateRows.add_plate

    def watching_add_plate(self, plate_id, results):
        gc.collect()
        seen.append({
            "alive": {p: sum(ref() is not None for ref in refs) for p, refs in shapes.items()},
            "staged_truth_rows": {p: _lines(self._staged(p, "truth")) for p in shapes},
        })
        shapes[plate_id] = [weakref.ref(s) for well in results.values() for s in well[3]]
        add_plate(self, plate_id, results)

    monkeypatch.setattr(archive_module._PlateRows, "add_plate", watching_add_plate)
    out = tmp_path / "raw"
    summary = write_archive(out, plates=3, seed=7, wells=96, size=32, workers=workers)

    assert all(len(refs) >= 96 for refs in shapes.values())  # a drop per well, at least
    assert [len(s["alive"]) for s in seen] == [0, 1, 2]
    assert all(n == 0 for s in seen for n in s["alive"].values())
    assert all(n == 96 for s in seen for n in s["staged_truth_rows"].values())
    # the staging folder is gone and the truth file holds every plate's rows, in plate order
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    with (out / "synthetic_truth.csv").open(newline="") as handle:
        plates = [row["plate_id"] for row in csv.DictReader(handle)]
    assert plates == [p for p in summary.plate_ids for _ in range(96)]


def _lines(path) -> int:
    with path.open() as handle:
        return sum(1 for _ in handle)


def test_staging_is_removed_when_writing_fails(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archive_module._PlateRows, "finish", fail)
    out = tmp_path / "raw"
    with pytest.raises(OSError, match="disk full"):
        write_archive(out, plates=1, seed=7, wells=96, size=32, workers=1)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_broken_rows_are_placed_from_row_counts_alone():
    """The plan needs each file's number of valid rows, not the rows; a broken row follows the
    valid row it copies, with only its kind's field changed (a duplicate changes nothing)."""
    counts = {"unknown_attribute": 2, "unknown_well": 2, "unknown_plate": 1, "missing_field": 2, "duplicate_row": 3}
    row_counts = {"P1.csv": 40, "P2.csv": 0, "P3.csv": 25}
    plan = annotation_files.malformed_plan(np.random.default_rng(3), row_counts, counts, unknown_plate="P0")
    assert plan["P2.csv"] == {}  # an empty file gets none
    placed = [(name, at) for name, inserts in plan.items() for at, changes in inserts.items() for _ in changes]
    assert len(placed) == sum(counts.values())
    assert all(0 <= at < row_counts[name] for name, at in placed)

    rows = [{"plate_id": "P1", "well": f"A{i:02d}", "annotator": "a", "attributes": "clear"} for i in range(40)]
    written = list(annotation_files.with_malformed(iter(rows), plan["P1.csv"]))
    assert len(written) == 40 + sum(len(c) for c in plan["P1.csv"].values())
    at = 0
    for row in written:
        if row in rows[at:at + 1]:
            at += 1
            continue
        source = rows[at - 1]  # a broken row follows the valid row it copies
        changed = {k for k in row if row[k] != source[k]}
        assert changed <= {"annotator", "attributes", "well", "plate_id"}
        assert list(row) == list(source)
    assert at == 40
    # the same draws give the same plan: the archive's bytes do not depend on when rows were written
    assert plan == annotation_files.malformed_plan(np.random.default_rng(3), row_counts, counts, unknown_plate="P0")
