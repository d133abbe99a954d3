"""The ``predictions`` table: one row per labelled well, plate imaging and model version."""

from __future__ import annotations

from typing import Optional

import pandas as pd

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows

PREDICTION_COLUMNS = ("image_id", "plate_id", "inspection", "well", "model_version", "class_id", "class_name",
                      "crystal_prob", "probs", "marco_class", "predicted_at")

_PLATE_MODEL = "plate_id = ? AND inspection IS NOT DISTINCT FROM ? AND model_version = ?"


def replace_plate_predictions(warehouse: Warehouse, plate_id: str, inspection: Optional[str], model_version: str,
                              frame: pd.DataFrame) -> None:
    """Make this plate imaging's rows for ``model_version`` exactly ``frame``'s (one transaction):
    a re-run replaces, it never duplicates."""
    with warehouse.transaction() as con:
        replace_rows(con, "predictions", frame, where=_PLATE_MODEL, params=[plate_id, inspection, model_version])


def plate_predictions(warehouse: Warehouse, plate_id: str, inspection: Optional[str], model_version: str,
                      columns: tuple[str, ...] = PREDICTION_COLUMNS) -> pd.DataFrame:
    """The stored rows of one plate imaging and model, by image id."""
    names = ", ".join(columns)
    return warehouse.query_df(f"SELECT {names} FROM predictions WHERE {_PLATE_MODEL} ORDER BY image_id",
                              [plate_id, inspection, model_version])
