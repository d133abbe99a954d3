"""The ``models`` table: which trained models exist and which one labels plates.

Promotion rule (DESIGN.md): the first model becomes production; a later one replaces
it only when its validation accuracy and crystal recall are not worse than the
production model's *on the same validation split* — so the production model is
re-scored on today's split rather than trusted with the number it got when it was
trained on an older one.

``crystal_recall`` is the recall of the has-crystal view of the 10-way prediction
(the paper's Table 4); ``temperature`` is the temperature fitted on validation
(:func:`calibrate`), and ``crystal_threshold`` is the *calibrated* crystal probability
that keeps crystal recall at 0.95 on validation, which plate reports use to call hits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from crystal_pipeline.evaluation.calibration import apply_temperature, fit_temperature
from crystal_pipeline.evaluation.metrics import (
    binary_auc,
    binary_metrics,
    crystal_confusion,
    crystal_probability,
    crystal_truth,
    predicted_classes,
    threshold_for_recall,
)
from crystal_pipeline.files import file_sha256
from crystal_pipeline.reporting.numbers import finite_or_none
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import models as model_table

THRESHOLD_RECALL = 0.95


@dataclass(frozen=True)
class Scores:
    val_accuracy: float
    crystal_recall: float
    crystal_auc: float
    crystal_threshold: float
    images: int
    temperature: float = 1.0


def score(class_ids: np.ndarray, probs: np.ndarray, temperature: float = 1.0) -> Scores:
    """Headline scores of a model's validation probabilities (NaN where undefined).

    ``probs`` are the network's softmax outputs; ``temperature`` is applied first, so the
    AUC and the threshold are those of the calibrated crystal_prob a user sees (accuracy
    and recall do not change: temperature keeps the arg-max)."""
    class_ids = np.asarray(class_ids)
    if temperature != 1.0 and len(class_ids):
        probs = apply_temperature(probs, temperature)
    accuracy = float((predicted_classes(probs) == class_ids).mean()) if len(class_ids) else math.nan
    crystal = binary_metrics(crystal_confusion(class_ids, probs))
    truth = crystal_truth(class_ids)
    p_crystal = crystal_probability(probs)
    return Scores(accuracy, crystal["recall"], binary_auc(truth, p_crystal),
                  threshold_for_recall(truth, p_crystal, THRESHOLD_RECALL), len(class_ids), float(temperature))


def calibrate(class_ids: np.ndarray, probs: np.ndarray) -> Scores:
    """Fit the temperature on these (validation) probabilities and score the calibrated ones."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    return score(class_ids, probs, fit_temperature(np.asarray(probs, dtype=np.float64), class_ids - 1))


def new_model_version(artifact: Path, now: datetime | None = None) -> str:
    """UTC timestamp + short content hash: sortable, unique, readable."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{file_sha256(artifact)[:8]}"


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
    """The production model's ``models`` row, or None before the first model."""
    return model_table.production_model(warehouse)


def model_row(warehouse: Warehouse, model_version: str | None = None) -> dict:
    """The named model's row, or the production model's; LookupError saying what to do."""
    if model_version:
        row = model_table.model_by_version(warehouse, model_version)
        if row is None:
            raise LookupError(f"model version {model_version!r} is not in the models table")
        return row
    row = production_model(warehouse)
    if row is None:
        raise LookupError("no production model: materialize crystalnet_model first (make demo does)")
    return row


def register(warehouse: Warehouse, *, model_version: str, preset: str, resolution: int, path: Path,
             trained_on: str, scores: Scores, promote: bool, parent_version: str | None = None,
             n_train_labels: int | None = None) -> None:
    """Insert the model's row (with its file's sha256 and, for a fine-tune, its parent) and,
    when promoted, make it the only production model (one transaction). NaN scores are stored as NULL."""
    model_table.insert_model(
        warehouse, model_version=model_version, created_at=datetime.now(timezone.utc).replace(tzinfo=None),
        preset=preset, resolution=resolution, path=str(path), sha256=file_sha256(path), trained_on=trained_on,
        val_accuracy=finite_or_none(scores.val_accuracy, None), crystal_recall=finite_or_none(scores.crystal_recall, None),
        crystal_auc=finite_or_none(scores.crystal_auc, None),
        crystal_threshold=finite_or_none(scores.crystal_threshold, None), make_production=promote,
        temperature=finite_or_none(scores.temperature, None), parent_version=parent_version,
        n_train_labels=n_train_labels)


def parent_model(warehouse: Warehouse, init_from: str) -> dict:
    """The ``models`` row a fine-tune starts from: ``production`` or a version. LookupError
    when there is none, ValueError when its file is missing or not the one registered
    (a fine-tune must not silently start from other weights)."""
    row = model_row(warehouse, None if init_from.strip().lower() == "production" else init_from.strip())
    problem = artifact_problem(row)
    if problem:
        raise ValueError(f"cannot fine-tune from {row['model_version']}: {problem}")
    return row


def artifact_problem(row: dict) -> str | None:
    """Why the registered model file cannot be trusted (missing, or its sha256 differs from
    the row's: replaced or damaged since registration), or None when it is the one registered."""
    path = Path(row["path"])
    if not path.is_file():
        return f"model file {path} is missing"
    actual = file_sha256(path)
    if actual != row.get("sha256"):
        return f"model file {path} has sha256 {actual[:12]}..., the registry says {str(row.get('sha256'))[:12]}..."
    return None


# Share of the majority answer's errors a model must remove to pass the accuracy floor.
DEFAULT_ERROR_REDUCTION = 0.25


def majority_rate(class_ids: np.ndarray) -> float:
    """Accuracy of always answering the most common class (0.0 without images)."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    return float(np.bincount(class_ids, minlength=11).max() / max(1, len(class_ids)))


def accuracy_floor(majority: float, error_reduction: float = DEFAULT_ERROR_REDUCTION) -> float:
    """The validation accuracy a useful model reaches: the majority rate plus
    ``error_reduction`` of the errors that answer makes (0.45 -> 0.59 at 0.25)."""
    return majority + error_reduction * (1.0 - majority)
