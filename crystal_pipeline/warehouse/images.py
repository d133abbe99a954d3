"""The ``images`` table: one row per image file, from the archive or the incoming folder.

Reads return pandas frames (small: one plate, or a summary); the one write replaces
rows by ``image_id`` in one transaction. Which rows a scan owns is an
:class:`ImageScope`, a typed value: callers never pass SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows

IMAGE_COLUMNS = (
    "image_id", "plate_id", "inspection", "plate_format", "well", "well_index", "row", "col", "path",
    "sha256", "width", "height", "mode", "status", "error", "source", "file_size", "file_mtime_ns", "ingested_at",
    "drop", "plate_drops",
)


@dataclass(frozen=True)
class ImageScope:
    """The ``images`` rows one scan is responsible for: every row from one ``source``
    (``"archive"``), or one plate imaging (``plate_id`` with its ``inspection``; an
    inspection of None means the rows without one, not "any")."""

    source: Optional[str] = None
    plate_id: Optional[str] = None
    inspection: Optional[str] = None

    @classmethod
    def of_source(cls, source: str) -> "ImageScope":
        return cls(source=source)

    @classmethod
    def of_plate(cls, plate_id: str, inspection: Optional[str]) -> "ImageScope":
        return cls(plate_id=plate_id, inspection=inspection)

    def where(self) -> tuple[str, list]:
        """The scope as a WHERE clause with its parameters (``TRUE`` for everything)."""
        if self.plate_id is not None:
            return "plate_id = ? AND inspection IS NOT DISTINCT FROM ?", [self.plate_id, self.inspection]
        if self.source is not None:
            return "source = ?", [self.source]
        return "TRUE", []


EVERYTHING = ImageScope()


def file_states(warehouse: Warehouse, scope: ImageScope = EVERYTHING) -> dict[str, tuple]:
    """``image_id -> (path, file_size, file_mtime_ns)`` of the stored rows in ``scope``."""
    where, params = scope.where()
    frame = warehouse.query_df(f"SELECT image_id, path, file_size, file_mtime_ns FROM images WHERE {where}", params)
    return {r.image_id: (r.path, r.file_size, r.file_mtime_ns) for r in frame.itertuples(index=False)}


def upsert_images(warehouse: Warehouse, frame: pd.DataFrame) -> None:
    """Replace the rows whose ``image_id`` is in ``frame`` by ``frame``'s (one transaction)."""
    with warehouse.transaction() as con:
        replace_rows(con, "images", frame, key="image_id")


def images_in(warehouse: Warehouse, scope: ImageScope, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The rows in ``scope`` (all columns, or ``columns``), by image id."""
    where, params = scope.where()
    names = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    return warehouse.query_df(f"SELECT {names} FROM images WHERE {where} ORDER BY image_id", params)


def plate_format(warehouse: Warehouse, plate_id: str, inspection: Optional[str]) -> Optional[int]:
    """The format ingest decided for one plate imaging (None without a valid well)."""
    where, params = ImageScope.of_plate(plate_id, inspection).where()
    value = warehouse.scalar(f"SELECT any_value(plate_format) FROM images WHERE {where}", params)
    return None if value is None or value != value else int(value)


def plates_summary(warehouse: Warehouse, scope: ImageScope = EVERYTHING) -> pd.DataFrame:
    """Per plate imaging: format, images and quarantined count."""
    where, params = scope.where()
    return warehouse.query_df(
        "SELECT plate_id, inspection, any_value(plate_format) AS format, count(*) AS images, "
        f"count(*) FILTER (status = 'quarantined') AS quarantined FROM images WHERE {where} "
        "GROUP BY ALL ORDER BY plate_id, inspection", params)


def quarantined(warehouse: Warehouse, scope: ImageScope = EVERYTHING, *, with_path: bool = False) -> pd.DataFrame:
    """``image_id, error`` (and ``path``) of the quarantined rows in ``scope``, by image id."""
    where, params = scope.where()
    columns = "image_id, error, path" if with_path else "image_id, error"
    return warehouse.query_df(
        f"SELECT {columns} FROM images WHERE {where} AND status = 'quarantined' ORDER BY image_id", params)


def plate_formats(warehouse: Warehouse) -> pd.DataFrame:
    """Distinct ``plate_id, inspection, plate_format`` (the annotation reader's plate layouts)."""
    return warehouse.query_df("SELECT DISTINCT plate_id, inspection, plate_format FROM images")


def image_ids(warehouse: Warehouse) -> set[str]:
    return set(warehouse.query_df("SELECT image_id FROM images")["image_id"])


def image_statuses(warehouse: Warehouse) -> dict[str, str]:
    """``image_id -> status`` (``ok`` or ``quarantined``)."""
    return dict(warehouse.query_df("SELECT image_id, status FROM images").itertuples(index=False))


def image_hashes(warehouse: Warehouse) -> dict[str, str]:
    """``image_id -> sha256`` of every row with a hash (identical files share a split side)."""
    frame = warehouse.query_df("SELECT image_id, sha256 FROM images WHERE sha256 IS NOT NULL")
    return dict(frame.itertuples(index=False))


def image_sources(warehouse: Warehouse) -> dict[str, str]:
    """image_id -> ``archive`` or ``incoming`` (which folder the file came from)."""
    return dict(warehouse.query_df("SELECT image_id, source FROM images").itertuples(index=False))
