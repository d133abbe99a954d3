"""One model's result on one split as one plain dict: what ``metrics.json`` holds, and what
the Markdown report, the HTML report and the Dagster UI render.

Every number a reader sees about a model is computed here once, from the probabilities:
overall accuracy, balanced accuracy (mean per-class recall), macro F1 and the crystal AUC,
each with a seeded 95% bootstrap interval, the per-class table, the review share
at the crystal-recall target, and the expected calibration error before and after the
model's temperature. :func:`comparison_entry` adds one baseline against CrystalNet on the
same images (with the exact McNemar p-value). :func:`write_metrics_json` writes the dict
atomically with NaN as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crystal_pipeline.classes import CLASS_NAMES, NUM_CLASSES
from crystal_pipeline.evaluation.marco import marco_metrics
from crystal_pipeline.evaluation.calibration import ECE_BINS, apply_temperature, expected_calibration_error
from crystal_pipeline.evaluation.metrics import (
    balanced_accuracy,
    binary_auc,
    confusion_matrix,
    confusion_metrics,
    crystal_probability,
    crystal_truth,
    f1_scores,
    macro_f1,
    one_vs_rest_auc,
    predicted_classes,
    review_share_at_recall,
)
from crystal_pipeline.evaluation.uncertainty import DEFAULT_RESAMPLES, bootstrap_ci, bootstrap_mean_ci, mcnemar
from crystal_pipeline.files import atomic_write_text
from crystal_pipeline.reporting.numbers import finite_or_none

RECALL_TARGET = 0.95
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
METRICS_FILE = "metrics.json"


def _balanced_of(true_ids: np.ndarray, predicted: np.ndarray) -> float:
    return balanced_accuracy(confusion_matrix(true_ids, predicted))


def _macro_f1_of(true_ids: np.ndarray, predicted: np.ndarray) -> float:
    return macro_f1(confusion_matrix(true_ids, predicted))


def classifier_scores(probs, class_ids, *, seed: int = BOOTSTRAP_SEED,
                      n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and crystal AUC of ``probs`` (N x 10) against
    ``class_ids`` (1..10), each with a seeded 95% bootstrap interval
    (images resampled with replacement; a re-run gives the same interval)."""
    probs = np.asarray(probs, dtype=np.float64)
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    predicted = predicted_classes(probs)
    confusion = confusion_matrix(class_ids, predicted)
    truth = crystal_truth(class_ids)
    p_crystal = crystal_probability(probs)
    empty = class_ids.size == 0
    nan_ci = [math.nan, math.nan]
    return {
        "n_images": int(class_ids.size),
        "accuracy": confusion_metrics(confusion)["accuracy"],
        "accuracy_ci95": nan_ci if empty else list(bootstrap_mean_ci(
            predicted == class_ids, confidence=CONFIDENCE, n_resamples=n_resamples, seed=seed)),
        "balanced_accuracy": balanced_accuracy(confusion),
        "balanced_accuracy_ci95": nan_ci if empty else list(bootstrap_ci(
            _balanced_of, class_ids, predicted, confidence=CONFIDENCE, n_resamples=n_resamples, seed=seed)),
        "macro_f1": macro_f1(confusion),
        "macro_f1_ci95": nan_ci if empty else list(bootstrap_ci(
            _macro_f1_of, class_ids, predicted, confidence=CONFIDENCE, n_resamples=n_resamples, seed=seed)),
        "crystal_auc": binary_auc(truth, p_crystal),
        "crystal_auc_ci95": nan_ci if empty else list(bootstrap_ci(
            binary_auc, truth, p_crystal, confidence=CONFIDENCE, n_resamples=n_resamples, seed=seed)),
    }


def per_class(probs, class_ids) -> dict[str, dict[str, float]]:
    """Class name -> support (true images), recall, precision, F1 and one-vs-rest AUC
    (NaN where the split cannot define it)."""
    probs = np.asarray(probs, dtype=np.float64)
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    confusion = confusion_matrix(class_ids, predicted_classes(probs))
    metrics = confusion_metrics(confusion)
    f1 = f1_scores(confusion)
    auc = one_vs_rest_auc(probs, class_ids)
    return {CLASS_NAMES[k]: {"support": int(confusion[k].sum()), "recall": float(metrics["recall"][k]),
                             "precision": float(metrics["precision"][k]), "f1": float(f1[k]),
                             "auc": float(auc[k])}
            for k in range(NUM_CLASSES)}


def model_metrics(raw_probs, class_ids, *, model_version: str, split: str, temperature: float = 1.0,
                  recall_target: float = RECALL_TARGET, seed: int = BOOTSTRAP_SEED,
                  n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """The whole result of a model on ``split`` (the dict ``metrics.json`` holds).

    ``raw_probs`` are the network's softmax outputs; every score is of the calibrated
    probabilities (``temperature`` applied, as every ``crystal_prob`` a user sees is), and
    ``ece_before`` / ``ece_after`` compare the two. ``baselines`` starts empty; the model
    comparison fills it (:func:`comparison_entry`).
    """
    raw = np.asarray(raw_probs, dtype=np.float64)
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    if raw.shape != (class_ids.size, NUM_CLASSES):
        raise ValueError(f"probabilities of shape {raw.shape} for {class_ids.size} labels; "
                         f"expected ({class_ids.size}, {NUM_CLASSES})")
    calibrated = apply_temperature(raw, temperature) if raw.size else raw
    true_index = class_ids - 1
    threshold, share, achieved = review_share_at_recall(
        crystal_truth(class_ids), crystal_probability(calibrated), recall_target) if class_ids.size else (math.nan,) * 3
    return {
        "model_version": model_version,
        "split": split,
        **classifier_scores(calibrated, class_ids, seed=seed, n_resamples=n_resamples),
        "crystal_recall_target": recall_target,
        "crystal_threshold_at_recall_target": threshold,
        "review_share_at_recall_target": share,
        "crystal_recall_achieved": achieved,
        "temperature": float(temperature),
        "ece_bins": ECE_BINS,
        "ece_before": expected_calibration_error(raw, true_index),
        "ece_after": expected_calibration_error(calibrated, true_index),
        "bootstrap": {"resamples": n_resamples, "seed": seed, "confidence": CONFIDENCE},
        "per_class": per_class(calibrated, class_ids),
        "marco": marco_metrics(calibrated, class_ids, confidence=CONFIDENCE, seed=seed, n_resamples=n_resamples),
        "baselines": {},
    }


def comparison_entry(baseline_probs, crystalnet_probs, class_ids, *, seed: int = BOOTSTRAP_SEED,
                     n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """A baseline's scores on the same images as CrystalNet, with the exact McNemar p-value
    of the two models' right/wrong answers (small p: the accuracies really differ)."""
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    scores = classifier_scores(baseline_probs, class_ids, seed=seed, n_resamples=n_resamples)
    test = mcnemar(predicted_classes(crystalnet_probs) == class_ids, predicted_classes(baseline_probs) == class_ids)
    return {**scores, "mcnemar_p_vs_crystalnet": test.p_value,
            "only_crystalnet_right": test.only_a_right, "only_baseline_right": test.only_b_right}


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON ``null``), numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_none(value, digits=None)
    return value


def write_metrics_json(folder: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """``<folder>/metrics.json``, replaced atomically; NaN written as null."""
    text = json.dumps(json_ready(metrics), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(Path(folder) / METRICS_FILE, text + "\n")


def read_metrics_json(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``metrics.json``, or None when there is none yet."""
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
