"""The ``models`` table: every registered model, exactly one of them flagged production."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from crystal_pipeline.warehouse.connection import Warehouse


def production_model(warehouse: Warehouse) -> Optional[dict]:
    """The production model's row as a dict, or None before the first model."""
    frame = warehouse.query_df("SELECT * FROM models WHERE is_production ORDER BY created_at DESC LIMIT 1")
    return None if frame.empty else frame.iloc[0].to_dict()


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
                 n_train_labels: Optional[int] = None) -> str:
    """Add a model's row and, with ``make_production``, make it the only production model
    (one transaction: there is never a moment with zero or two production models).
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
            "n_train_labels, is_production) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE)",
            [model_version, created_at, preset, resolution, path, sha256, trained_on, val_accuracy,
             crystal_recall, crystal_auc, crystal_threshold, temperature, parent_version, n_train_labels],
        )
        if make_production:
            con.execute("UPDATE models SET is_production = (model_version = ?)", [model_version])
        return model_version

    return warehouse.write(register, scope="models")
