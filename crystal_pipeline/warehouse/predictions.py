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
    warehouse.write(lambda con: replace_rows(con, "predictions", frame, where=_PLATE_MODEL,
                                             params=[plate_id, inspection, model_version]),
                    scope=f"predictions/{plate_id}/{inspection}/{model_version}")


def plate_predictions(warehouse: Warehouse, plate_id: str, inspection: Optional[str], model_version: str,
                      columns: tuple[str, ...] = PREDICTION_COLUMNS) -> pd.DataFrame:
    """The stored rows of one plate imaging and model, by image id."""
    names = ", ".join(columns)
    return warehouse.query_df(f"SELECT {names} FROM predictions WHERE {_PLATE_MODEL} ORDER BY image_id",
                              [plate_id, inspection, model_version])


#: Columns of :func:`plate_history`: a prediction with the drop and file of its image.
HISTORY_COLUMNS = ("image_id", "inspection", "well", "drop", "path", "model_version", "class_id", "class_name",
                   "crystal_prob", "predicted_at")


def plate_history(warehouse: Warehouse, plate_id: str, model_version: Optional[str] = None) -> pd.DataFrame:
    """One prediction per labelled image of every inspection of ``plate_id`` (the time course).

    Per image: the row of ``model_version`` when it labelled that image, else the newest
    row of any model (an inspection labelled before a new model was promoted keeps its
    label). ``drop`` and ``path`` come from ``images`` (drop 1 when the row has none).
    """
    return warehouse.query_df(
        "SELECT p.image_id, p.inspection, p.well, coalesce(i.\"drop\", 1) AS \"drop\", i.path, p.model_version, "
        "p.class_id, p.class_name, p.crystal_prob, p.predicted_at "
        "FROM predictions p LEFT JOIN images i USING (image_id) WHERE p.plate_id = ? "
        "QUALIFY row_number() OVER (PARTITION BY p.image_id "
        "ORDER BY (p.model_version IS NOT DISTINCT FROM ?) DESC, p.predicted_at DESC, p.model_version DESC) = 1 "
        "ORDER BY p.image_id", [plate_id, model_version])
