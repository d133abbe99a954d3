"""A model's result in MARCO's four classes (crystals, precipitate, clear, other).

Other tools and data sets (MARCO) score four outcomes; a lab comparing CrystalNet with them
needs our numbers in their classes. The true four-class label is the mapping of the true
ten-class id (:data:`crystal_pipeline.classes.MARCO_OF_CLASS`); the prediction is the arg-max
of the four summed calibrated probabilities (:func:`crystal_pipeline.classes.marco_outcome`),
the same rule ``predictions.marco_class`` and ``hits.csv`` use. :func:`marco_metrics` is the
``marco`` block of ``metrics.json``; :func:`marco_grid` the report's four-class confusion table.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from crystal_pipeline.classes import MARCO_CLASSES, MARCO_MATRIX, marco_probs
from crystal_pipeline.evaluation.metrics import confusion_matrix, confusion_metrics
from crystal_pipeline.evaluation.tables import Grid, confusion_grid
from crystal_pipeline.evaluation.uncertainty import DEFAULT_RESAMPLES, bootstrap_mean_ci

MARCO_TITLES = ("Crystals", "Precipitate", "Clear", "Other")


def marco_ids(class_ids: np.ndarray) -> np.ndarray:
    """1-based MARCO ids (index in :data:`MARCO_CLASSES` + 1) of ten-class ids 1..10."""
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    return MARCO_MATRIX[class_ids - 1].argmax(axis=1) + 1 if class_ids.size else class_ids


def predicted_marco_ids(probs: np.ndarray) -> np.ndarray:
    """1-based MARCO ids predicted from (N, 10) probabilities: the arg-max of the four sums."""
    probs = np.asarray(probs, dtype=np.float64)
    return marco_probs(probs).argmax(axis=1) + 1 if len(probs) else np.zeros(0, dtype=np.int64)


def marco_confusion(probs: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """4 x 4 counts, rows true, columns predicted, in :data:`MARCO_CLASSES` order."""
    return confusion_matrix(marco_ids(class_ids), predicted_marco_ids(probs), num_classes=len(MARCO_CLASSES))


def marco_metrics(probs: np.ndarray, class_ids: np.ndarray, *, confidence: float = 0.95, seed: int = 0,
                  n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Four-class accuracy with its bootstrap interval (images resampled, seeded), per-class
    recall and the confusion counts, of calibrated ``probs`` against ten-class ``class_ids``."""
    truth, predicted = marco_ids(class_ids), predicted_marco_ids(probs)
    confusion = marco_confusion(probs, class_ids)
    metrics = confusion_metrics(confusion)
    empty = truth.size == 0
    return {
        "classes": list(MARCO_CLASSES),
        "n_images": int(truth.size),
        "accuracy": float(metrics["accuracy"]),
        "accuracy_ci95": [math.nan, math.nan] if empty else list(bootstrap_mean_ci(
            predicted == truth, confidence=confidence, n_resamples=n_resamples, seed=seed)),
        "recall": {name: float(metrics["recall"][k]) for k, name in enumerate(MARCO_CLASSES)},
        "confusion": confusion.tolist(),
    }


def marco_grid(result: Mapping[str, Any]) -> Grid:
    """The four-class confusion table (the paper's Table 2 layout) from a ``marco`` block."""
    return confusion_grid(np.asarray(result["confusion"], dtype=np.int64), MARCO_TITLES)
