"""The ``models`` table: every registered model, at most one of them production per kind of
input (``in_channels``: 1 visible, 2 visible + UV), so a fused model's promotion leaves the
visible production model to label plates without UV pictures (docs/decisions.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from crystal_pipeline.warehouse.connection import Warehouse


#: A row's input channels; NULL (registered before the column, not yet read from its file) counts as visible.
CHANNELS_SQL = "coalesce(in_channels, 1)"


def _has_channels_column(warehouse: Warehouse) -> bool:
    """Whether ``models`` has ``in_channels``. A warehouse from before the column gains it at
    its next write (``ensure_schema``); a read-only open (``doctor``) never migrates, and must
    still read it: there, every model is of the one kind that existed, visible."""
    return bool(warehouse.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = 'models' "
                                 "AND column_name = 'in_channels' AND table_catalog = current_database()"))


def production_model(warehouse: Warehouse, in_channels: Optional[int] = None) -> Optional[dict]:
    """The production model's row as a dict (the newest of either kind, or the one reading
    ``in_channels`` pictures), or None when there is none."""
    channels = CHANNELS_SQL if in_channels is None or _has_channels_column(warehouse) else "1"
    kind = "" if in_channels is None else f" AND {channels} = ?"
    frame = warehouse.query_df(f"SELECT * FROM models WHERE is_production{kind} ORDER BY created_at DESC LIMIT 1",
                               [] if in_channels is None else [int(in_channels)])
    return None if frame.empty else frame.iloc[0].to_dict()


def rows_without_channels(warehouse: Warehouse) -> list[dict]:
    """Rows registered before ``in_channels`` existed whose count is not filled in yet (none to
    fill while the column itself is missing: it comes with the warehouse's next write)."""
    if not _has_channels_column(warehouse):
        return []
    return warehouse.query_df("SELECT * FROM models WHERE in_channels IS NULL ORDER BY created_at").to_dict("records")


def set_in_channels(warehouse: Warehouse, model_version: str, in_channels: int) -> None:
    """Record a row's input channels (only where still unknown: a recorded count never changes)."""
    warehouse.write(lambda con: con.execute("UPDATE models SET in_channels = ? WHERE model_version = ? AND "
                                            "in_channels IS NULL", [int(in_channels), model_version]),
                    scope="models")


def model_by_version(warehouse: Warehouse, model_version: str) -> Optional[dict]:
    """The named model's row as a dict, or None when no such version is registered."""
    frame = warehouse.query_df("SELECT * FROM models WHERE model_version = ?", [model_version])
    return None if frame.empty else frame.iloc[0].to_dict()


def model_by_sha256(warehouse: Warehouse, sha256: str) -> Optional[dict]:
    """The row registered for a file with this sha256 (the oldest, should there be several), or None."""
    frame = warehouse.query_df("SELECT * FROM models WHERE sha256 = ? ORDER BY created_at LIMIT 1", [sha256])
    return None if frame.empty else frame.iloc[0].to_dict()


def registered_count(warehouse: Warehouse) -> int:
    """How many models are registered, production or not."""
    return int(warehouse.scalar("SELECT count(*) FROM models"))


def insert_model(warehouse: Warehouse, *, model_version: str, created_at: datetime, preset: str, resolution: int,
                 path: str, sha256: str, trained_on: str, val_accuracy: Optional[float],
                 crystal_recall: Optional[float], crystal_auc: Optional[float],
                 crystal_threshold: Optional[float], make_production: bool,
                 temperature: Optional[float] = None, parent_version: Optional[str] = None,
                 n_train_labels: Optional[int] = None, in_channels: int = 1) -> str:
    """Add a model's row and, with ``make_production``, make it the only production model of
    its ``in_channels`` (one transaction: there is never a moment with zero or two of a kind).
    ``parent_version`` is the model a fine-tune started from (None from scratch).

    Idempotent per file: when a row with this ``sha256`` exists already (a promotion killed
    after its row and run again), nothing is written. Returns the version that holds the file."""
    def register(con) -> str:
        existing = con.execute("SELECT model_version FROM models WHERE sha256 = ? ORDER BY created_at LIMIT 1",
                               [sha256]).fetchone()
        if existing is not None:
            return str(existing[0])
        con.execute(
            "INSERT INTO models (model_version, created_at, preset, resolution, path, sha256, trained_on, "
            "val_accuracy, crystal_recall, crystal_auc, crystal_threshold, temperature, parent_version, "
            "n_train_labels, in_channels, is_production) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE)",
            [model_version, created_at, preset, resolution, path, sha256, trained_on, val_accuracy,
             crystal_recall, crystal_auc, crystal_threshold, temperature, parent_version, n_train_labels,
             int(in_channels)],
        )
        if make_production:
            con.execute(f"UPDATE models SET is_production = (model_version = ?) WHERE {CHANNELS_SQL} = ?",
                        [model_version, int(in_channels)])
        return model_version

    return warehouse.write(register, scope="models")
