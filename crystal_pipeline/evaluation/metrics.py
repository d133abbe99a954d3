"""Scores of a 10-way classifier, as the paper reports them and as a screening lab needs them.

Conventions, kept by every function here so a report never has to guess:

- Class ids are 1..K (the warehouse's ids); probability column ``j`` is class ``j + 1``.
- A confusion matrix has true classes in rows and predicted classes in columns.
- A number that the data cannot define is NaN, never 0 and never an exception: recall of a
  class with no true samples, precision of a class nobody predicted, AUC of a class with no
  positives or no negatives. A 0 would read as "the model failed" where the truth is "the
  validation set cannot tell"; renderers show NaN as an en dash.
- "Has crystal" is classes 3, 5, 7 (:data:`~crystal_pipeline.classes.CRYSTAL_CLASS_IDS`);
  ``crystal_prob`` = p3 + p5 + p7, and the binary prediction is "the predicted class is a
  crystal class" (the paper's Table 4), not a threshold on ``crystal_prob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# CRYSTAL_COLUMNS (0-based crystal columns) is defined beside the class ids and re-exported here.
from crystal_pipeline.classes import CRYSTAL_CLASS_IDS, CRYSTAL_COLUMNS, NUM_CLASSES


def _check_probs(probs: np.ndarray, n: int | None = None) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (N, K), got shape {probs.shape}")
    if n is not None and probs.shape[0] != n:
        raise ValueError(f"{probs.shape[0]} probability rows for {n} labels")
    return probs


def predicted_classes(probs: np.ndarray) -> np.ndarray:
    """Arg-max class ids (1-based); ties go to the lower id, as numpy's argmax does."""
    return _check_probs(probs).argmax(axis=1) + 1


def confusion_matrix(true_ids, predicted_ids, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """K x K int64 counts, rows true, columns predicted; ids outside 1..K raise."""
    true_ids = np.asarray(true_ids, dtype=np.int64).ravel()
    predicted_ids = np.asarray(predicted_ids, dtype=np.int64).ravel()
    if true_ids.shape != predicted_ids.shape:
        raise ValueError(f"{true_ids.size} true labels but {predicted_ids.size} predictions")
    for name, ids in (("true", true_ids), ("predicted", predicted_ids)):
        if ids.size and (ids.min() < 1 or ids.max() > num_classes):
            raise ValueError(f"{name} class ids must lie in 1..{num_classes}")
    flat = (true_ids - 1) * num_classes + (predicted_ids - 1)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def confusion_metrics(confusion) -> dict:
    """Per-class ``recall`` and ``precision`` (length-K float arrays) and overall ``accuracy``.

    Recall of a class with no true samples (zero row) and precision of a class never
    predicted (zero column) are NaN: undefined, not zero. Accuracy of an empty matrix is NaN.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {confusion.shape}")
    if (confusion < 0).any():
        raise ValueError("confusion counts must be non-negative")
    diagonal = np.diag(confusion)
    total = confusion.sum()
    return {
        "recall": _divide(diagonal, confusion.sum(axis=1)),
        "precision": _divide(diagonal, confusion.sum(axis=0)),
        "accuracy": float(diagonal.sum() / total) if total > 0 else math.nan,
    }


def balanced_accuracy(confusion) -> float:
    """Mean per-class recall over the classes present in the truth (scikit-learn's
    ``balanced_accuracy_score``); NaN for an empty matrix. A model that never predicts a
    rare class loses that class's whole share here, which overall accuracy hides."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1)
    present = support > 0
    if not present.any():
        return math.nan
    return float((np.diag(confusion)[present] / support[present]).mean())


def f1_scores(confusion) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN); NaN for a class neither true nor predicted,
    0 for a class present but never right (scikit-learn's ``zero_division=0``)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    return _divide(2 * tp, denominator)


def macro_f1(confusion) -> float:
    """Unweighted mean F1 over the classes that are true or predicted at least once
    (scikit-learn's ``f1_score(average="macro")``); NaN for an empty matrix."""
    scores = f1_scores(confusion)
    scores = scores[np.isfinite(scores)]
    return float(scores.mean()) if scores.size else math.nan


def binary_auc(positive, scores) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive``; NaN when either side is empty.

    Computed as the Mann-Whitney statistic with average ranks, so ties count one half,
    exactly as scikit-learn's ``roc_auc_score`` does.
    """
    positive = np.asarray(positive, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if positive.shape != scores.shape:
        raise ValueError(f"{positive.size} labels but {scores.size} scores")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (scipy's ``rankdata``), in numpy
    alone, so training on a GPU box without scipy computes the same AUC."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]] if values.size else np.zeros(0, bool)
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size] - 1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + ends) / 2.0 + 1.0)[group]
    return ranks


def one_vs_rest_auc(probs: np.ndarray, true_ids) -> np.ndarray:
    """Per-class AUC of column ``j`` for class ``j + 1`` against the rest (NaN where undefined)."""
    true_ids = np.asarray(true_ids).ravel()
    probs = _check_probs(probs, true_ids.size)
    return np.array([binary_auc(true_ids == k + 1, probs[:, k]) for k in range(probs.shape[1])])


def roc_curve(positive, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate, thresholds)``; empty arrays when undefined."""
    positive = np.asarray(positive, dtype=bool).ravel()
    if positive.all() or not positive.any():
        empty = np.empty(0)
        return empty, empty, empty
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, thresholds = sk_roc_curve(positive, np.asarray(scores, dtype=np.float64).ravel())
    return fpr, tpr, thresholds


def crystal_truth(true_ids) -> np.ndarray:
    """Boolean "has crystal" of each class id."""
    return np.isin(np.asarray(true_ids), sorted(CRYSTAL_CLASS_IDS))


def crystal_probability(probs: np.ndarray) -> np.ndarray:
    """p3 + p5 + p7 per row."""
    return _check_probs(probs)[:, list(CRYSTAL_COLUMNS)].sum(axis=1)


def crystal_confusion(true_ids, probs: np.ndarray) -> np.ndarray:
    """The paper's Table 4 counts: 2 x 2, index 0 = no-crystal, 1 = has-crystal."""
    truth = crystal_truth(true_ids).astype(np.int64)
    predicted = crystal_truth(predicted_classes(_check_probs(probs, truth.size))).astype(np.int64)
    return np.bincount(truth * 2 + predicted, minlength=4).reshape(2, 2)


@dataclass(frozen=True)
class ReviewShare:
    """How much manual review a crystal threshold leaves, at a required crystal recall."""

    target_recall: float
    threshold: float
    review_share: float
    achieved_recall: float


def threshold_for_recall(crystal_true, crystal_prob, recall: float = 0.95) -> float:
    """The highest probability threshold whose hits (``prob >= t``) keep ``recall`` of the crystals.

    This is the model's ``crystal_threshold`` (DESIGN.md: recall 0.95 on validation). The
    highest such threshold flags the fewest images. NaN when there are no crystal images.
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must lie in (0, 1], got {recall}")
    crystal_true = np.asarray(crystal_true, dtype=bool).ravel()
    crystal_prob = np.asarray(crystal_prob, dtype=np.float64).ravel()
    if crystal_true.shape != crystal_prob.shape:
        raise ValueError(f"{crystal_true.size} labels but {crystal_prob.size} probabilities")
    positives = np.sort(crystal_prob[crystal_true])[::-1]
    if positives.size == 0:
        return math.nan
    # The tolerance keeps 0.95 * 20 (= 19.000000000000004 in floats) at 19 crystals.
    needed = min(positives.size, max(1, math.ceil(recall * positives.size - 1e-9)))
    return float(positives[needed - 1])


def review_share_at_recall(crystal_true, crystal_prob, recall: float = 0.95
                           ) -> tuple[float, float, float]:
    """``(threshold, share of all images with prob >= threshold, achieved recall)``.

    The share is what a person must still look at if every image above the threshold is
    reviewed and everything below it is trusted as crystal-free; it grows with the recall
    asked for. All three are NaN when there are no crystal images.
    """
    threshold = threshold_for_recall(crystal_true, crystal_prob, recall)
    if math.isnan(threshold):
        return math.nan, math.nan, math.nan
    crystal_true = np.asarray(crystal_true, dtype=bool).ravel()
    flagged = np.asarray(crystal_prob, dtype=np.float64).ravel() >= threshold
    return threshold, float(flagged.mean()), float(flagged[crystal_true].mean())


def review_shares(crystal_true, crystal_prob, recalls=(0.95, 0.99)) -> list[ReviewShare]:
    """:func:`review_share_at_recall` at each recall, for the report's table."""
    return [ReviewShare(r, *review_share_at_recall(crystal_true, crystal_prob, r)) for r in recalls]


def binary_metrics(confusion_2x2) -> dict:
    """Crystal recall, precision (of the has-crystal class) and accuracy of a Table 4 matrix."""
    metrics = confusion_metrics(confusion_2x2)
    return {
        "recall": float(metrics["recall"][1]),
        "precision": float(metrics["precision"][1]),
        "no_crystal_recall": float(metrics["recall"][0]),
        "no_crystal_precision": float(metrics["precision"][0]),
        "accuracy": metrics["accuracy"],
    }
