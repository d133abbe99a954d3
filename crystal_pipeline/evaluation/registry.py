"""The ``models`` table: which trained models exist and which one labels plates.

Promotion rule (DESIGN.md): the first model becomes production; a later one replaces
it only when its validation accuracy and crystal recall are not worse than the
production model's *on the same validation split* — so the production model is
re-scored on today's split rather than trusted with the number it got when it was
trained on an older one.

``crystal_recall`` is the recall of the has-crystal view of the 10-way prediction
(the paper's Table 4); ``crystal_threshold`` is the crystal probability that keeps
crystal recall at 0.95 on validation, which plate reports use to call hits.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from crystal_pipeline.evaluation.metrics import (
    binary_auc,
    binary_metrics,
    crystal_confusion,
    crystal_probability,
    crystal_truth,
    predicted_classes,
    threshold_for_recall,
)
from crystal_pipeline.warehouse import Warehouse

THRESHOLD_RECALL = 0.95


@dataclass(frozen=True)
class Scores:
    val_accuracy: float
    crystal_recall: float
    crystal_auc: float
    crystal_threshold: float
    images: int


def score(class_ids: np.ndarray, probs: np.ndarray) -> Scores:
    """Headline scores of a model's validation probabilities (NaN where undefined)."""
    class_ids = np.asarray(class_ids)
    accuracy = float((predicted_classes(probs) == class_ids).mean()) if len(class_ids) else math.nan
    crystal = binary_metrics(crystal_confusion(class_ids, probs))
    truth = crystal_truth(class_ids)
    p_crystal = crystal_probability(probs)
    return Scores(accuracy, crystal["recall"], binary_auc(truth, p_crystal),
                  threshold_for_recall(truth, p_crystal, THRESHOLD_RECALL), len(class_ids))


def new_model_version(artifact: Path, now: datetime | None = None) -> str:
    """UTC timestamp + short content hash: sortable, unique, readable."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{file_sha256(artifact)[:8]}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def not_worse(candidate: Scores, production: Scores | None) -> tuple[bool, str]:
    """Whether ``candidate`` may replace ``production``, and why, in words."""
    if production is None:
        return True, "first model: becomes production"
    problems = []
    for name in ("val_accuracy", "crystal_recall"):
        new, old = getattr(candidate, name), getattr(production, name)
        if math.isnan(new) or (not math.isnan(old) and new < old):
            problems.append(f"{name} {new:.4f} < production's {old:.4f}")
    if problems:
        return False, "kept the production model: " + "; ".join(problems)
    return True, (f"promoted: val_accuracy {candidate.val_accuracy:.4f} >= {production.val_accuracy:.4f} and "
                  f"crystal_recall {candidate.crystal_recall:.4f} >= {production.crystal_recall:.4f}")


def production_model(warehouse: Warehouse) -> dict | None:
    frame = warehouse.query_df("SELECT * FROM models WHERE is_production ORDER BY created_at DESC LIMIT 1")
    return None if frame.empty else frame.iloc[0].to_dict()


def model_row(warehouse: Warehouse, model_version: str | None = None) -> dict:
    """The named model's row, or the production model's; LookupError saying what to do."""
    if model_version:
        frame = warehouse.query_df("SELECT * FROM models WHERE model_version = ?", [model_version])
        if frame.empty:
            raise LookupError(f"model version {model_version!r} is not in the models table")
        return frame.iloc[0].to_dict()
    row = production_model(warehouse)
    if row is None:
        raise LookupError("no production model: materialize crystalnet_model first (make demo does)")
    return row


def register(warehouse: Warehouse, *, model_version: str, preset: str, resolution: int, path: Path,
             trained_on: str, scores: Scores, promote: bool) -> None:
    """Insert the model's row and, when promoted, make it the only production model (one transaction)."""
    def number(x: float):
        return None if x is None or math.isnan(x) else float(x)

    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO models (model_version, created_at, preset, resolution, path, sha256, trained_on, "
            "val_accuracy, crystal_recall, crystal_auc, crystal_threshold, is_production) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE)",
            [model_version, datetime.now(timezone.utc).replace(tzinfo=None), preset, resolution, str(path),
             file_sha256(path), trained_on, number(scores.val_accuracy), number(scores.crystal_recall),
             number(scores.crystal_auc), number(scores.crystal_threshold)],
        )
        if promote:
            con.execute("UPDATE models SET is_production = (model_version = ?)", [model_version])
