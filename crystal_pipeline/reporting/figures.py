"""Pictures for people: small PNGs rendered with matplotlib's Agg backend.

Every function returns PNG bytes, so the same figure can go into a Dagster
materialization (as a base64 image in Markdown), into a report folder, or into a
test that decodes it. :func:`pyplot` and :func:`figure_png` are the two steps every
figure module here shares (the evaluation figures, the plate map): draw on Agg,
encode to PNG.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported on first use.

    Imported lazily so that importing a report module costs nothing until a figure is
    drawn; ``force=False`` leaves a backend a caller already chose (a notebook's) alone.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes (100 dpi, tight bounding box), and the figure closed.

    Every figure of every report goes through here, so they share one resolution and a
    long-running process (the Dagster daemon) never accumulates open figures.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def bar_chart(counts: Mapping[str, Mapping[str, int]], title: str, *, xlabel: str = "", log: bool = False) -> bytes:
    """Grouped bars: ``counts[series][category]`` (e.g. split -> class -> images)."""
    plt = pyplot()
    categories = list(dict.fromkeys(c for series in counts.values() for c in series))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(categories) + 2), 3.2))
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(categories))
    for i, (name, series) in enumerate(counts.items()):
        ax.bar(x + i * width, [series.get(c, 0) for c in categories], width, label=name)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, categories, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    if log:
        ax.set_yscale("log")
    if len(counts) > 1:
        ax.legend()
    return figure_png(fig)


def image_grid(images: Sequence[np.ndarray], labels: Sequence[str], *, columns: int = 8, title: str = "",
               cmap: str = "gray", vmin=None, vmax=None) -> bytes:
    """A grid of grey images with a caption under each."""
    plt = pyplot()
    n = max(1, len(images))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title)
    return figure_png(fig)


def training_curves(history: Sequence[Mapping[str, float]], title: str = "training") -> bytes:
    """Loss and accuracy against updates: what a person checks first about a run."""
    plt = pyplot()
    updates = [h["update"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(updates, [h["loss"] for h in history], label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        pts = [(h["update"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
        left.plot(*zip(*pts), "o-", label="val loss")
    left.set_xlabel("update")
    left.set_title("loss")
    left.legend()
    right.plot(updates, [h["train_acc"] for h in history], label="train accuracy")
    # Only points where validation actually ran (they carry val_loss); progress lines
    # in between repeat the last val_acc.
    pts = [(h["update"], h["val_acc"]) for h in history if h.get("val_loss") is not None and h.get("val_acc") is not None]
    if pts:
        right.plot(*zip(*pts), "o-", label="val accuracy")
    right.set_xlabel("update")
    right.set_ylim(0, 1)
    right.set_title("accuracy")
    right.legend()
    fig.suptitle(title)
    return figure_png(fig)
