"""The ``annotations`` and ``annotation_errors`` tables: expert votes and unusable CSV rows.

Both are rebuilt from the CSVs on every run, together, in one transaction.
"""

from __future__ import annotations

import pandas as pd

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows


def replace_annotations(warehouse: Warehouse, rows: pd.DataFrame, errors: pd.DataFrame) -> None:
    """Make the two tables hold exactly ``rows`` and ``errors`` (one transaction)."""
    def store(con):
        replace_rows(con, "annotations", rows)
        replace_rows(con, "annotation_errors", errors)

    warehouse.write(store, scope="annotations")


def annotation_errors(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.query_df("SELECT * FROM annotation_errors ORDER BY source_file, source_line")


def votes_with_sources(warehouse: Warehouse) -> pd.DataFrame:
    """Every annotation row with its annotator and where it came from (file, line, file mtime):
    what consensus needs to let the later of two reviews win."""
    return warehouse.query_df(
        "SELECT image_id, annotator, attributes, source_file, source_line, source_mtime_ns FROM annotations "
        "ORDER BY image_id, annotator, source_file, source_line")
