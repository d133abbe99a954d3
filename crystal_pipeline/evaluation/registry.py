"""The ``models`` table: which trained models exist and which one labels plates.

Promotion rule (DESIGN.md, with issue 18's floor): a model whose validation accuracy is
below the accuracy floor (:class:`AccuracyFloor`) is registered but never production,
not even the first one; above it, the first model becomes production, and a later one
replaces production (of its own kind: one production model reads visible pictures, one
visible + UV, ``in_channels``; plates choose between them, ``plates.model_choice``) only when its validation accuracy and crystal recall are not worse
than the production model's *on the same validation split* — so the production model is
re-scored on today's split rather than trusted with the number it got when it was
trained on an older one. A production model whose file is missing or damaged cannot be
re-scored; it is "unusable" and any new model clearing the floor replaces it.

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
from crystal_pipeline.model.fusion import KIND_NAMES
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


@dataclass(frozen=True)
class AccuracyFloor:
    """The validation accuracy a model must reach to label plates, and how it was set."""

    value: float
    majority_rate: float
    rule: str

    def cleared_by(self, scores: Scores) -> bool:
        """True when ``scores.val_accuracy`` reaches the floor (NaN never does)."""
        return bool(scores.val_accuracy >= self.value)


def floor_for(class_ids: np.ndarray, *, absolute: float | None = None,
              error_reduction: float | None = None) -> AccuracyFloor:
    """The floor on these validation labels: ``absolute`` when given, else the majority
    rate plus ``error_reduction`` (default :data:`DEFAULT_ERROR_REDUCTION`) of its errors."""
    error_reduction = DEFAULT_ERROR_REDUCTION if error_reduction is None else error_reduction
    majority = majority_rate(class_ids)
    if absolute is not None:
        return AccuracyFloor(float(absolute), majority, "absolute (accuracy_floor)")
    return AccuracyFloor(accuracy_floor(majority, error_reduction), majority,
                         f"majority + {error_reduction} x (1 - majority)")


def promotion_decision(candidate: Scores, production: Scores | None, floor: AccuracyFloor, *,
                       production_problem: str | None = None) -> tuple[bool, str]:
    """Whether ``candidate`` becomes production, and why, in words: the floor first, then an
    unusable production model (``production_problem``) is replaced, then :func:`not_worse`."""
    if not floor.cleared_by(candidate):
        return False, (f"below the accuracy floor: val_accuracy {candidate.val_accuracy:.4f} < floor "
                       f"{floor.value:.4f} ({floor.rule}, majority rate {floor.majority_rate:.4f}); registered, "
                       "not production")
    if production_problem is not None:
        return True, f"promoted: the production model is unusable ({production_problem}); this one clears the floor"
    return not_worse(candidate, production)


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


def production_model(warehouse: Warehouse, in_channels: int | None = None) -> dict | None:
    """The production model's ``models`` row (the newest of either kind, or the one reading
    ``in_channels`` pictures: 1 visible, 2 visible + UV), or None before the first model."""
    return model_table.production_model(warehouse, in_channels)




def production_models(warehouse: Warehouse) -> dict[int, dict]:
    """``in_channels -> row`` of every production model, one per kind (visible, fused), for
    whoever must look at each (the doctor); a kind without a production model is absent."""
    rows = {kind: production_model(warehouse, kind) for kind in KIND_NAMES}
    return {kind: row for kind, row in rows.items() if row is not None}


def channels_of_artifact(artifact: dict) -> int:
    """The pictures a model artifact reads: its ``model_config``'s ``in_channels`` (absent: 1)."""
    return int((artifact.get("model_config") or {}).get("in_channels", 1))


def record_input_channels(warehouse: Warehouse) -> list[str]:
    """Fill ``in_channels`` of rows registered before the column from their files' model config
    (each file checked against its sha256 first); a file that is missing or unreadable stays
    unknown (counted as visible, and its load fails with its own error). Returns the versions
    filled. One query when every row is known already."""
    from crystal_pipeline.model import ArtifactError, load_artifact

    filled = []
    for row in model_table.rows_without_channels(warehouse):
        try:
            channels = channels_of_artifact(load_artifact(verify_registered(row)))
        except (ModelIntegrityError, ArtifactError):
            continue
        model_table.set_in_channels(warehouse, str(row["model_version"]), channels)
        filled.append(str(row["model_version"]))
    return filled


def model_row(warehouse: Warehouse, model_version: str | None = None, in_channels: int | None = None) -> dict:
    """The named model's row, or the production model's (of the kind reading ``in_channels``
    pictures, when given); LookupError saying what to do."""
    if model_version:
        row = model_table.model_by_version(warehouse, model_version)
        if row is None:
            raise LookupError(f"model version {model_version!r} is not in the models table")
        return row
    row = production_model(warehouse, in_channels)
    if row is None:
        other = production_model(warehouse)
        if other is not None:
            raise LookupError(f"no production {KIND_NAMES[int(in_channels)]} model ({other['model_version']} is "
                              "production for the other kind of pictures); train one from scratch, or name "
                              "model_version")
        registered = model_table.registered_count(warehouse)
        raise LookupError(
            "no production model: " + (f"{registered} registered model(s), none cleared the accuracy floor; "
                                       if registered else "none is registered; ")
            + "materialize crystalnet_model to train one that clears the floor, or name model_version")
    return row


def register(warehouse: Warehouse, *, model_version: str, preset: str, resolution: int, path: Path,
             trained_on: str, scores: Scores, promote: bool, parent_version: str | None = None,
             n_train_labels: int | None = None, in_channels: int = 1) -> str:
    """Insert the model's row (with its file's sha256, its input channels and, for a fine-tune,
    its parent) and, when promoted, make it the only production model reading ``in_channels``
    pictures (one transaction). NaN scores are stored as NULL.
    A file already registered is not registered twice; returns the version holding it."""
    return model_table.insert_model(
        warehouse, model_version=model_version, created_at=datetime.now(timezone.utc).replace(tzinfo=None),
        preset=preset, resolution=resolution, path=str(path), sha256=file_sha256(path), trained_on=trained_on,
        val_accuracy=finite_or_none(scores.val_accuracy, None), crystal_recall=finite_or_none(scores.crystal_recall, None),
        crystal_auc=finite_or_none(scores.crystal_auc, None),
        crystal_threshold=finite_or_none(scores.crystal_threshold, None), make_production=promote,
        temperature=finite_or_none(scores.temperature, None), parent_version=parent_version,
        n_train_labels=n_train_labels, in_channels=in_channels)


def model_by_sha256(warehouse: Warehouse, sha256: str) -> dict | None:
    """The row registered for the file with this content, or None (promotion's idempotency key)."""
    return model_table.model_by_sha256(warehouse, sha256)


def parent_model(warehouse: Warehouse, init_from: str, in_channels: int | None = None) -> dict:
    """The ``models`` row a fine-tune starts from: ``production`` (the production model of the
    kind the run trains, ``in_channels``, when given) or a version. LookupError when there is
    none, ValueError when its file is missing or not the one registered (a fine-tune must not
    silently start from other weights)."""
    row = model_row(warehouse, None if init_from.strip().lower() == "production" else init_from.strip(), in_channels)
    try:
        verify_registered(row)
    except ModelIntegrityError as error:
        raise ValueError(f"cannot fine-tune from {row['model_version']}: {error}") from error
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


class ModelIntegrityError(RuntimeError):
    """A registered model's file is missing or is not the file its ``models`` row hashed."""


def verify_registered(row: dict) -> Path:
    """The row's model file, after checking its sha256 against the row's; ModelIntegrityError
    (naming the version and what is wrong) before anything reads the weights."""
    problem = artifact_problem(row)
    if problem:
        raise ModelIntegrityError(f"model {row.get('model_version')}: {problem}; it was not loaded")
    return Path(row["path"])


def load_registered(row: dict, device: str = "auto"):
    """The model of a ``models`` row, loaded only after its file's sha256 matched the row's:
    every load by row goes through here, so a replaced or damaged file never labels a plate."""
    from crystal_pipeline.model import load

    return load(verify_registered(row), device)


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
