"""The ``images`` table: one row per image file, from the archive or the incoming folder.

Reads return pandas frames (small: one plate, or a summary); the one write replaces
rows by ``image_id`` and marks the scan's vanished rows in one transaction. Which rows a
scan owns is an :class:`ImageScope`, a typed value: callers never pass SQL.

``status`` is ``ok``, ``quarantined`` (the file does not decode) or ``vanished`` (the
file was ingested once and is no longer on disk). Reads of a plate's files
(:func:`images_in`) leave vanished rows out by default, so a vanished well counts as
missing, not as a file to label or quarantine.

``imaging`` is ``visible`` or ``uv``: a UV picture is its visible partner's companion (image
id ``<visible id>.uv``), not a file of its own to label, so plate reads leave accepted UV
rows out unless asked (:func:`images_in`) and :func:`uv_partners` pairs them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows

IMAGE_COLUMNS = (
    "image_id", "plate_id", "inspection", "plate_format", "well", "well_index", "row", "col", "path",
    "sha256", "width", "height", "mode", "status", "error", "source", "file_size", "file_mtime_ns", "ingested_at",
    "drop", "plate_drops", "imaging",
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


@dataclass(frozen=True)
class FileState:
    """What a scan compares a file on disk with: where it was, its size and mtime, and
    the row's ``status`` and ``source``."""

    path: str
    file_size: Optional[int]
    file_mtime_ns: Optional[int]
    status: str
    source: str

    def same_file(self, path: str, size: Optional[int], mtime_ns: Optional[int]) -> bool:
        """The stored row still describes this file (a vanished row never does: it is read again)."""
        return self.status != "vanished" and (self.path, self.file_size, self.file_mtime_ns) == (path, size, mtime_ns)


def file_states(warehouse: Warehouse, scope: ImageScope = EVERYTHING) -> dict[str, FileState]:
    """``image_id -> FileState`` of the stored rows in ``scope``."""
    where, params = scope.where()
    frame = warehouse.query_df(
        f"SELECT image_id, path, file_size, file_mtime_ns, status, source FROM images WHERE {where}", params)
    return {r.image_id: FileState(r.path, None if pd.isna(r.file_size) else int(r.file_size),
                                  None if pd.isna(r.file_mtime_ns) else int(r.file_mtime_ns), r.status, r.source)
            for r in frame.itertuples(index=False)}


def sources_of(warehouse: Warehouse, image_ids: list[str], *, other_than: str) -> dict[str, str]:
    """``image_id -> source`` of the stored rows among ``image_ids`` whose source is not ``other_than``."""
    if not image_ids:
        return {}
    frame = warehouse.query_df(
        "SELECT image_id, source FROM images WHERE source <> ? AND image_id IN (SELECT unnest(?::VARCHAR[]))",
        [other_than, list(image_ids)])
    return dict(frame.itertuples(index=False))


def upsert_images(warehouse: Warehouse, frame: pd.DataFrame, vanished: list[str] = ()) -> None:
    """Replace the rows whose ``image_id`` is in ``frame`` by ``frame``'s and mark the
    ``vanished`` ids' rows ``status = 'vanished'`` (one transaction: a scan's result is
    stored whole or not at all)."""
    def store(con):
        replace_rows(con, "images", frame, key="image_id")
        if vanished:
            con.execute("UPDATE images SET status = 'vanished', error = 'file vanished from disk: ' || path "
                        "WHERE image_id IN (SELECT unnest(?::VARCHAR[]))", [list(vanished)])

    warehouse.write(store, scope="images")


def images_in(warehouse: Warehouse, scope: ImageScope, columns: tuple[str, ...] | None = None, *,
              with_vanished: bool = False, with_uv: bool = False) -> pd.DataFrame:
    """The rows in ``scope`` (all columns, or ``columns``), by image id; without the
    vanished rows unless ``with_vanished`` (a vanished file is not there to label), and
    without the accepted UV rows unless ``with_uv`` (a UV picture goes with its visible
    partner's row, :func:`uv_partners`). A quarantined UV row stays: the plate's
    quarantine list must show a UV picture that came without its visible one."""
    where, params = scope.where()
    names = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    present = "" if with_vanished else " AND status <> 'vanished'"
    visible = "" if with_uv else " AND (imaging IS DISTINCT FROM 'uv' OR status = 'quarantined')"
    return warehouse.query_df(f"SELECT {names} FROM images WHERE {where}{present}{visible} ORDER BY image_id",
                              params)


def uv_partners(warehouse: Warehouse, scope: ImageScope = EVERYTHING) -> dict[str, str]:
    """``visible image_id -> path`` of the UV picture accepted beside it (status ``ok``), in ``scope``.

    Ingest accepts a UV row only beside an accepted visible one, and its image id is the
    visible id with ``.uv`` (``wells.image_id``), so the pair is found by id."""
    from crystal_pipeline.wells import UV_ID_SUFFIX

    where, params = scope.where()
    frame = warehouse.query_df(
        f"SELECT image_id, path FROM images WHERE {where} AND imaging = 'uv' AND status = 'ok'", params)
    cut = len(UV_ID_SUFFIX)
    return {i[:-cut]: p for i, p in frame.itertuples(index=False) if i.endswith(UV_ID_SUFFIX)}


def plate_format(warehouse: Warehouse, plate_id: str, inspection: Optional[str]) -> Optional[int]:
    """The format ingest decided for one plate imaging (None without a valid well)."""
    where, params = ImageScope.of_plate(plate_id, inspection).where()
    value = warehouse.scalar(f"SELECT any_value(plate_format) FROM images WHERE {where}", params)
    return None if value is None or value != value else int(value)


def plates_summary(warehouse: Warehouse, scope: ImageScope = EVERYTHING) -> pd.DataFrame:
    """Per plate imaging: format, images on disk, quarantined and vanished counts."""
    where, params = scope.where()
    return warehouse.query_df(
        "SELECT plate_id, inspection, any_value(plate_format) AS format, "
        "count(*) FILTER (status <> 'vanished') AS images, "
        "count(*) FILTER (status = 'quarantined') AS quarantined, "
        f"count(*) FILTER (status = 'vanished') AS vanished FROM images WHERE {where} "
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
    """``image_id -> status`` (``ok``, ``quarantined`` or ``vanished``)."""
    return dict(warehouse.query_df("SELECT image_id, status FROM images").itertuples(index=False))


def image_hashes(warehouse: Warehouse) -> dict[str, str]:
    """``image_id -> sha256`` of every row with a hash (identical files share a split side)."""
    frame = warehouse.query_df("SELECT image_id, sha256 FROM images WHERE sha256 IS NOT NULL")
    return dict(frame.itertuples(index=False))


def image_sources(warehouse: Warehouse) -> dict[str, str]:
    """image_id -> ``archive`` or ``incoming`` (which folder the file came from)."""
    return dict(warehouse.query_df("SELECT image_id, source FROM images").itertuples(index=False))
