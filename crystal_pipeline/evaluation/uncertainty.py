"""How sure a number is: bootstrap intervals, and a paired test between two models.

A test split of a few hundred images moves an accuracy by a point or two between
re-runs, so a figure without its interval invites a wrong conclusion, and an order
between two models needs a paired test on the same images (DESIGN.md, "Benchmark
protocol"). Both live here, in numpy/scipy, so every report computes them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from crystal_pipeline.evaluation.metrics import binary_auc

DEFAULT_RESAMPLES = 2000


def bootstrap_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) row indices drawn with replacement, from a seeded generator so a
    re-run gives the same interval."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates; NaN replicates (a
    statistic undefined on that resample, e.g. an AUC with one class) are left out."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95,
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Interval of a mean (accuracy = mean of per-image correctness), vectorised."""
    x = np.asarray(values, dtype=np.float64)
    idx = bootstrap_indices(len(x), n_resamples, seed)
    return percentile_interval(x[idx].mean(axis=1), confidence)


def bootstrap_ci(statistic: Callable[..., float], *arrays: np.ndarray, confidence: float = 0.95,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Interval of ``statistic(*arrays)`` by resampling images (rows) with replacement;
    the arrays are resampled together, so paired columns stay paired."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("arrays differ in length")
    idx = bootstrap_indices(n, n_resamples, seed)
    replicates = np.array([statistic(*(a[rows] for a in arrays)) for rows in idx], dtype=np.float64)
    return percentile_interval(replicates, confidence)


def paired_auc_difference(positive, scores_a, scores_b, *, confidence: float = 0.95,
                          n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """ROC AUC of ``scores_a`` minus that of ``scores_b`` for the boolean ``positive``, with the
    interval of the difference: both models resampled on the same images, so what the images
    have in common cancels and the interval is narrower than either AUC's own."""
    def difference(t, a, b):
        return binary_auc(t, a) - binary_auc(t, b)

    interval = bootstrap_ci(difference, positive, scores_a, scores_b, confidence=confidence,
                            n_resamples=n_resamples, seed=seed)
    return difference(np.asarray(positive), np.asarray(scores_a), np.asarray(scores_b)), interval


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on the images two models disagree about being right on."""

    only_a_right: int
    only_b_right: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.only_a_right + self.only_b_right


def mcnemar(a_correct, b_correct) -> McNemar:
    """Two-sided exact (binomial) McNemar p-value for paired right/wrong vectors.

    Exact rather than the chi-square approximation because a small test split often has
    few discordant images, where the approximation is poor; with none, p = 1.
    """
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("paired vectors differ in length")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return McNemar(only_a, only_b, min(1.0, p))
