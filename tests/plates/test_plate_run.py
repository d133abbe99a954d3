"""plates.plate_run: the accounting re-derived from the warehouse, and labels read back from predictions."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from crystal_pipeline.plates import plate_run
from crystal_pipeline.plates.labelling import LabelTimings, QuarantinedImage
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import predictions as prediction_table
from crystal_pipeline.warehouse.images import IMAGE_COLUMNS

TIMINGS = LabelTimings(0.0, 0.0, 0.0, 1.0, 0, "test")


def run_of(version: str, late=()) -> plate_run.PlateRun:
    return plate_run.PlateRun(version, 0.5, "synthetic", 32, TIMINGS, tuple(late))


@pytest.fixture
def plate(tmp_path):
    """Plate P (96 wells): A01..A12 imaged, A03 quarantined at ingest; model v1 labelled the other 11."""
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    now = dt.datetime(2024, 3, 20)
    images, predictions = [], []
    for col in range(1, 13):
        name = f"A{col:02d}"
        status = "quarantined" if name == "A03" else "ok"
        images.append(dict(image_id=f"P/{name}", plate_id="P", inspection=None, plate_format=96, well=name,
                           well_index=col - 1, row=0, col=col - 1, path=str(tmp_path / f"{name}.png"), sha256="x",
                           width=8, height=8, mode="L", status=status,
                           error="cannot decode" if status == "quarantined" else None, source="incoming",
                           file_size=1, file_mtime_ns=1, ingested_at=now, drop=1, plate_drops=1))
        if status == "ok":
            probs = [0.0] * 10
            probs[0] = 1.0
            predictions.append(dict(image_id=f"P/{name}", plate_id="P", inspection=None, well=name,
                                    model_version="v1", class_id=1, class_name="clear", crystal_prob=0.0,
                                    probs=probs, marco_class="clear", predicted_at=now))
    image_table.upsert_images(wh, pd.DataFrame(images, columns=list(IMAGE_COLUMNS)))
    prediction_table.replace_plate_predictions(wh, "P", None, "v1", pd.DataFrame(
        predictions, columns=list(prediction_table.PREDICTION_COLUMNS)))
    return wh


def test_checks_hold_for_a_complete_accounting_and_list_the_quarantined_and_missing(plate):
    found = plate_run.prediction_checks(plate, "P", None, run_of("v1"))
    assert found.accounted and (found.files, found.labelled) == (12, 11)
    assert not found.complete and found.quarantined == [("P/A03", "cannot decode")]
    assert len(found.missing) == 96 - 12 and found.missing[0] == "B01"
    assert found.max_abs_deviation == 0.0
    labels = plate_run.stored_labels(plate, "P", None, run_of("v1"))
    assert [r.image_id for r in labels.rows][:2] == ["P/A01", "P/A02"] and len(labels.quarantined) == 1


def test_a_lost_or_unlabelled_well_is_unaccounted_and_the_report_refuses_it(plate):
    with plate.transaction() as con:
        con.execute("DELETE FROM predictions WHERE image_id = 'P/A07'")
    found = plate_run.prediction_checks(plate, "P", None, run_of("v1"))
    assert not found.accounted and found.unaccounted == ["P/A07"]
    with pytest.raises(ValueError, match="10 predictions of model v1 \\+ 1 quarantined != 12 files"):
        plate_run.stored_labels(plate, "P", None, run_of("v1"))
    # Another model's rows do not account for this run's model.
    assert plate_run.prediction_checks(plate, "P", None, run_of("v2")).unaccounted == sorted(
        f"P/A{c:02d}" for c in range(1, 13) if c != 3)
    # A well labelling could not decode (changed since ingest) is accounted as quarantined by the run.
    late = QuarantinedImage("P/A07", "A07", plate.path.parent / "A07.png", "truncated since ingest")
    found = plate_run.prediction_checks(plate, "P", None, run_of("v1", [late]))
    assert found.accounted and ("P/A07", "truncated since ingest") in found.quarantined


def test_stored_labels_carry_the_runs_crystal_positions(plate):
    from crystal_pipeline.model.cam import CrystalPosition

    position = CrystalPosition(0.3, 0.6, ((0.0, 1.0), (0.5, 0.0)), (0.25, 0.75), (0.25, 0.75))
    run = plate_run.PlateRun("v1", 0.5, "synthetic", 32, TIMINGS, crystal_positions={"P/A01": position})
    labels = plate_run.stored_labels(plate, "P", None, run)
    by_id = {r.image_id: r.crystal for r in labels.rows}
    assert by_id["P/A01"] == position and by_id["P/A02"] is None
