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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows
from crystal_pipeline.warehouse.staging import copy_to, parquet_scan

_STR, _INT, _BIG = pa.string(), pa.int32(), pa.int64()
#: An ``images`` row as ingest stages it (``staging.StagedRows``), in ``IMAGE_COLUMNS`` order.
IMAGE_SCHEMA = pa.schema([
    ("image_id", _STR), ("plate_id", _STR), ("inspection", _STR), ("plate_format", _INT), ("well", _STR),
    ("well_index", _INT), ("row", _INT), ("col", _INT), ("path", _STR), ("sha256", _STR), ("width", _INT),
    ("height", _INT), ("mode", _STR), ("status", _STR), ("error", _STR), ("source", _STR), ("file_size", _BIG),
    ("file_mtime_ns", _BIG), ("ingested_at", pa.timestamp("us")), ("drop", _INT), ("plate_drops", _INT),
    ("imaging", _STR),
])
IMAGE_COLUMNS = tuple(IMAGE_SCHEMA.names)

#: A file a scan found, as it stages it before comparing with the stored rows: what its name
#: says (``archive.WellFile``), its size and mtime, and ``seq``, the scan's order.
FOUND_SCHEMA = pa.schema([
    ("seq", _BIG), ("image_id", _STR), ("plate_id", _STR), ("inspection", _STR), ("plate_format", _INT),
    ("well", _STR), ("well_index", _INT), ("row", _INT), ("col", _INT), ("path", _STR), ("error", _STR),
    ("drop", _INT), ("plate_drops", _INT), ("imaging", _STR), ("file_size", _BIG), ("file_mtime_ns", _BIG),
])


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


@dataclass
class ScanPlan:
    """A scan's staged files against the stored rows in its scope: how many are new, changed
    and unchanged, the stored rows no longer found (``(image_id, status)``, by id), and the
    found or in-scope ids stored from another source (``image_id -> source``)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    vanished: list[tuple[str, str]] = field(default_factory=list)
    clashes: dict[str, str] = field(default_factory=dict)


def plan_scan(warehouse: Warehouse, found: Path, scope: ImageScope, *, source: str, todo: Path) -> ScanPlan:
    """Compare the staged ``found`` files (``FOUND_SCHEMA``) with the stored rows in ``scope``
    and write those to read (new, changed, or stored as vanished) to ``todo``, in scan order.

    A stored row still describes its file when it is not vanished (a vanished row is read
    again) and its path, size and mtime are the file's; compared in SQL, so the stored rows
    are never held in Python."""
    where, params = scope.where()
    files = parquet_scan(found)
    known = f"(SELECT image_id, path, file_size, file_mtime_ns, status FROM images WHERE {where})"
    same = ("k.status <> 'vanished' AND k.path = f.path AND k.file_size IS NOT DISTINCT FROM f.file_size "
            "AND k.file_mtime_ns IS NOT DISTINCT FROM f.file_mtime_ns")
    with warehouse.connect(read_only=True) as con:
        new, changed, unchanged = con.execute(
            f"SELECT count(*) FILTER (k.image_id IS NULL), count(*) FILTER (k.image_id IS NOT NULL AND NOT ({same})), "
            f"count(*) FILTER ({same}) FROM {files} f LEFT JOIN {known} k USING (image_id)", params).fetchone()
        con.execute(f"COPY (SELECT f.* FROM {files} f LEFT JOIN {known} k USING (image_id) "
                    f"WHERE k.image_id IS NULL OR NOT ({same}) ORDER BY f.seq) {copy_to(todo)}", params)
        vanished = con.execute(
            f"SELECT image_id, status FROM images k WHERE {where} AND NOT EXISTS "
            f"(SELECT 1 FROM {files} f WHERE f.image_id = k.image_id) ORDER BY image_id", params).fetchall()
        clashes = con.execute(
            f"SELECT i.image_id, i.source FROM {files} f JOIN images i USING (image_id) WHERE i.source <> ? "
            f"UNION SELECT image_id, source FROM images WHERE {where} AND source <> ?",
            [source, *params, source]).fetchall()
    return ScanPlan(int(new or 0), int(changed or 0), int(unchanged or 0), vanished, dict(clashes))


def upsert_images(warehouse: Warehouse, frame, vanished: list[str] = ()) -> None:
    """Replace the rows whose ``image_id`` is in ``frame`` (a pandas frame, or a staged file:
    ``staging.staged``) by ``frame``'s and mark the ``vanished`` ids' rows ``status =
    'vanished'`` (one transaction: a scan's result is stored whole or not at all)."""
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
