"""The evaluation report's figures: crystal ROC (paper Figure 5), confusion heatmap, first-layer
filters (Figure 3) and the training-size curve (Figure 4).

Drawn with :func:`~crystal_pipeline.reporting.figures.pyplot` and encoded by
:func:`~crystal_pipeline.reporting.figures.figure_png`, like every figure of the reports: each
function returns PNG bytes, so one figure serves the report folder, the Dagster UI and tests.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from crystal_pipeline.reporting.figures import figure_png, pyplot
from crystal_pipeline.reporting.numbers import finite_or_none


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *,
               title: str = "Crystal vs no-crystal ROC") -> bytes:
    """One ROC curve per model on one plot; ``curves[name] = (fpr, tpr, auc)``.

    A model whose curve is undefined (no crystal or no non-crystal image) is listed in the
    legend as such rather than dropped, so the reader knows it was evaluated.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--")
    for name, (fpr, tpr, auc) in curves.items():
        if len(fpr) == 0 or finite_or_none(auc) is None:
            ax.plot([], [], label=f"{name} (AUC undefined)")
        else:
            ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.4f})")
    return _unit_square_png(fig, ax, "False positive rate", "True positive rate (crystal recall)", title,
                            "lower right")


def confusion_heatmap(confusion, titles: Sequence[str], *, title: str = "Confusion matrix") -> bytes:
    """Row-normalised colours (recall per cell) with the raw counts written in each cell.

    Normalising by row keeps rare classes visible; the counts keep the picture honest.
    """
    plt = pyplot()
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(0.6 * k + 3, 0.55 * k + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), titles, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(k), titles, fontsize=8)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    return figure_png(fig)


def filter_grid(weights, *, columns: int = 8, title: str = "First-layer filters") -> bytes:
    """First-layer convolution weights ``(out, in, h, w)`` as grey tiles, each on its own range.

    Each filter is scaled to its own min..max: filters differ in norm by orders of magnitude,
    and a shared scale would show most of them flat grey. Multi-channel inputs are averaged.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4:
        raise ValueError(f"filter weights must be (out, in, h, w), got shape {weights.shape}")
    tiles = []
    for w in weights.mean(axis=1):
        span = w.max() - w.min()
        tiles.append((w - w.min()) / span if span > 0 else np.full_like(w, 0.5))
    # One mosaic with 1-px white gutters reads like the paper's figure and stays small,
    # where a subplot per 5x5 filter would spend most of the page on margins.
    h, w = tiles[0].shape
    rows = -(-len(tiles) // columns)
    mosaic = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        mosaic[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = tile
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.45 * columns + 0.5, 0.45 * rows + 0.8))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{title} ({len(tiles)} of {h}x{w})", fontsize=9)
    return figure_png(fig)


def training_size_curve(sizes: Sequence[int], accuracies: Mapping[str, Sequence[float]], *,
                        title: str = "Test-split accuracy vs training images") -> bytes:
    """Accuracy (fraction) against number of unique training images, one line per series."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, values in accuracies.items():
        ax.plot(sizes, [100 * v for v in values], marker="o", label=name)
    ax.set_xlabel("Training images")
    ax.set_ylabel("Test-split accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(accuracies) > 1:
        ax.legend(fontsize=8)
    return figure_png(fig)


def reliability_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[int], float]], *,
                       title: str = "Reliability diagram") -> bytes:
    """Accuracy against mean confidence per confidence bin, one line per probability set.

    ``curves[name] = (bin confidences, bin accuracies, bin counts, ECE)``; empty bins (count 0)
    are skipped. A calibrated model lies on the diagonal.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="perfect calibration")
    for name, (confidence, accuracy, counts, ece) in curves.items():
        keep = np.asarray(counts) > 0
        ece_text = "undefined" if finite_or_none(ece) is None else f"{ece:.4f}"
        ax.plot(np.asarray(confidence)[keep], np.asarray(accuracy)[keep], marker="o", ms=3, lw=1.4,
                label=f"{name} (ECE {ece_text})")
    return _unit_square_png(fig, ax, "Mean top-class probability in bin", "Share of the bin predicted right", title,
                            "upper left")


def _unit_square_png(fig, ax, xlabel: str, ylabel: str, title: str, legend_loc: str) -> bytes:
    """The frame the ROC and the reliability diagram share: both axes over [0, 1], legend, grid."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)
