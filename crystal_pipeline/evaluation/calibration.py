"""Probabilities a crystallographer can read as probabilities: temperature scaling.

A network trained with cross-entropy is usually over-confident. One temperature T,
fitted on the validation split by minimising the negative log-likelihood of
softmax(log p / T), fixes most of it without changing any prediction's ranking or
argmax (Guo et al. 2017). The expected calibration error (ECE) over equal-width
confidence bins says how far confidence and accuracy are apart, before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# One implementation, in the model package so labelling (torch/numpy only) applies the same one.
from crystal_pipeline.model.inference import apply_temperature

__all__ = ["ECE_BINS", "ReliabilityBin", "apply_temperature", "expected_calibration_error", "fit_temperature",
           "negative_log_likelihood", "reliability_bins"]

ECE_BINS = 15
_EPS = 1e-12


def negative_log_likelihood(probs: np.ndarray, true_index: np.ndarray) -> float:
    """Mean -log p[true class]; ``true_index`` is 0-based into the probability columns."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(true_index)), np.asarray(true_index)]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean())


def fit_temperature(probs: np.ndarray, true_index: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in ``bounds`` minimising validation NLL (a bounded 1-D search over log T)."""
    from scipy.optimize import minimize_scalar

    if len(true_index) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(apply_temperature(probs, float(np.exp(log_t))), true_index),
        bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean top-class probability in the bin (NaN if empty)
    accuracy: float  # share of the bin's images whose top class is right (NaN if empty)


def reliability_bins(probs: np.ndarray, true_index: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Equal-width bins of top-class confidence, with each bin's accuracy."""
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(true_index)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n,
                                  float(confidence[mask].mean()) if n else float("nan"),
                                  float(correct[mask].mean()) if n else float("nan")))
    return out


def expected_calibration_error(probs: np.ndarray, true_index: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share of images) x |accuracy - confidence|."""
    total = len(true_index)
    if total == 0:
        return float("nan")
    return float(sum(b.count / total * abs(b.accuracy - b.confidence)
                     for b in reliability_bins(probs, true_index, bins) if b.count))
