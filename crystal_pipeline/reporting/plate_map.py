"""The plate map: a plate's grid as a crystallographer reads it, one PNG.

Each well is coloured by its predicted class (tab10, in class order) and carries a black
dot sized by its crystal probability. A hit inside the review budget (the wells to look
at first) gets a large gold star, any other hit a small white one, so a weak model that
flags most of a plate still gives a map with a short list on it; quarantined wells
are hatched with a ``Q``, wells with no file stay pale grey. A plate with several drops
per well draws each well as that many side-by-side cells, drop 1 on the left. Wells
named in ``new_hits`` (hits that were not hits at the previous inspection) get a red
frame, so the map of a re-imaged plate shows what changed. Drawn with
:func:`~crystal_pipeline.reporting.figures.pyplot` and encoded by
:func:`~crystal_pipeline.reporting.figures.figure_png`, like every report figure.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from crystal_pipeline import wells
from crystal_pipeline.classes import CLASS_TITLES
from crystal_pipeline.reporting.figures import figure_png, pyplot

if TYPE_CHECKING:  # the map reads labels; it does not need the labelling code loaded
    from crystal_pipeline.plates.labelling import PlateLabels

# tab10, in class order: distinct for 10 classes and readable for most colour vision.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MISSING_COLOUR = "#f0f0f0"
QUARANTINE_COLOUR = "#555555"


NEW_HIT_COLOUR = "#e00000"
REVIEW_FIRST_COLOUR = "#ffc400"
CHANGED_COLOUR = "#ff2bd6"


def plate_map_png(plate_key: str, plate_format: int, labels: PlateLabels, crystal_threshold: float,
                  new_hits: frozenset[str] | set[str] = frozenset(),
                  review_first: frozenset[str] | set[str] | None = None,
                  changed: frozenset[str] | set[str] | None = None, title: str | None = None) -> bytes:
    """The plate grid as PNG bytes (see the module docstring for the encoding).

    ``new_hits``: slot names (``A01``, ``A01_2``) to frame in red as new since the previous inspection.
    ``review_first``: slot names of the hits to review first (large gold stars; the other hits get
    small stars). None draws every hit alike. ``changed``: slot names whose crystal call another
    model of the plate makes differently (magenta diamonds; None: no such mark, no legend entry).
    ``title``: what the map's title calls the plate (default ``plate_key``)."""
    plt = pyplot()
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle

    n_rows, n_cols = wells.PLATE_FORMATS[plate_format]
    drops = max(1, labels.drops)
    grid = np.empty((n_rows, n_cols * drops, 3))
    grid[:] = to_rgb(MISSING_COLOUR)
    dots: list[tuple[int, int, float]] = []
    stars: list[tuple[int, int]] = []
    first: list[tuple[int, int]] = []
    counts: Counter[int] = Counter()
    framed: list[tuple[int, int]] = []
    diamonds: list[tuple[int, int]] = []
    for r in labels.rows:
        pos = _grid_pos(r.well, plate_format, r.drop, drops)
        if pos is None:
            continue
        row, col = pos
        grid[row, col] = to_rgb(CLASS_COLOURS[r.class_id - 1])
        counts[r.class_id] += 1
        dots.append((row, col, r.crystal_prob))
        if r.crystal_prob >= crystal_threshold:
            (first if review_first is not None and r.slot in review_first else stars).append((row, col))
        if r.slot in new_hits:
            framed.append((row, col))
        if changed is not None and r.slot in changed:
            diamonds.append((row, col))
    q_cells = {pos for q in labels.quarantined
               if (pos := _grid_pos(q.well, plate_format, q.drop, drops)) is not None}
    for row, col in q_cells:
        grid[row, col] = to_rgb(QUARANTINE_COLOUR)

    cell = {96: 0.55, 384: 0.36, 1536: 0.26}[plate_format]
    fig, ax = plt.subplots(figsize=(n_cols * cell + 3.2, n_rows * cell + 1.2))
    ax.imshow(grid, interpolation="nearest", aspect=drops)  # a well (``drops`` cells wide) stays square
    scale = (cell * 72 * 0.8 / drops) ** 2  # marker area (points^2) of a dot filling ~80% of a cell's width
    if dots:
        d = np.array(dots)
        ax.scatter(d[:, 1], d[:, 0], s=np.clip(d[:, 2], 0, 1) * scale * 0.6, c="black", linewidths=0)
    if stars:
        s = np.array(stars)
        small = review_first is not None
        ax.scatter(s[:, 1], s[:, 0], s=scale * (0.25 if small else 0.9), marker="*", c="white", edgecolors="black",
                   linewidths=0.3 if small else 0.6)
    if first:
        f = np.array(first)
        ax.scatter(f[:, 1], f[:, 0], s=scale * 1.3, marker="*", c=REVIEW_FIRST_COLOUR, edgecolors="black",
                   linewidths=0.7, zorder=3)
    if diamonds:
        m = np.array(diamonds)
        ax.scatter(m[:, 1], m[:, 0], s=scale * 0.8, marker="D", facecolors="none", edgecolors=CHANGED_COLOUR,
                   linewidths=1.4, zorder=4)
    font = {96: 9, 384: 7, 1536: 5}[plate_format]
    for row, col in q_cells:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, hatch="////", edgecolor="white",
                               linewidth=0))
        ax.text(col, row, "Q", ha="center", va="center", color="white", fontsize=font, fontweight="bold")
    for row, col in framed:
        ax.add_patch(Rectangle((col - 0.45, row - 0.45), 0.9, 0.9, fill=False, edgecolor=NEW_HIT_COLOUR,
                               linewidth=1.5))
    ax.set_xticks([c * drops + (drops - 1) / 2 for c in range(n_cols)], [str(c) for c in range(1, n_cols + 1)],
                  fontsize=font)
    ax.set_yticks(range(n_rows), [wells.row_letters(r) for r in range(1, n_rows + 1)], fontsize=font)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(-0.5, n_cols * drops, drops), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4)
    if drops > 1:  # a thinner line between the drops of one well
        inner = [c * drops + d - 0.5 for c in range(n_cols) for d in range(1, drops)]
        ax.vlines(inner, -0.5, n_rows - 0.5, colors="white", linewidth=0.15)
    ax.tick_params(which="minor", length=0)
    n_missing = len(labels.missing_wells(plate_format))
    n_hits = len(stars) + len(first)
    review = f", {len(first)} to review first" if review_first is not None else ""
    ax.set_title(f"{title or plate_key}: {len(labels.rows)} labelled, {len(labels.quarantined)} quarantined, "
                 f"{n_missing} missing, {n_hits} hits (crystal p >= {crystal_threshold:.2f}){review}", fontsize=10)
    _legend(ax, counts, len(q_cells), n_missing, len(framed) if new_hits else None, crystal_threshold,
            len(first) if review_first is not None else None, len(diamonds) if changed is not None else None)
    return figure_png(fig)


def _legend(ax, counts: Counter[int], n_quarantined: int, n_missing: int, n_new: int | None,
            crystal_threshold: float, n_first: int | None = None, n_changed: int | None = None) -> None:
    """The key beside the grid: classes with counts, quarantined, missing, new hits (when framed), marks."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=CLASS_COLOURS[i], label=f"{CLASS_TITLES[i]} ({counts.get(i + 1, 0)})") for i in range(10)]
    handles += [
        Patch(facecolor=QUARANTINE_COLOUR, hatch="////", edgecolor="white", label=f"quarantined ({n_quarantined})"),
        Patch(facecolor=MISSING_COLOUR, edgecolor="#999999", label=f"missing ({n_missing})"),
        *([Patch(facecolor="none", edgecolor=NEW_HIT_COLOUR, label=f"new hit since last inspection ({n_new})")]
          if n_new is not None else []),
        Line2D([], [], marker="o", color="black", linestyle="", markersize=5, label="dot size = crystal p"),
        *([Line2D([], [], marker="D", color="none", markeredgecolor=CHANGED_COLOUR, linestyle="", markersize=8,
                  label=f"crystal call differs from the other model ({n_changed})")] if n_changed is not None else []),
        *([Line2D([], [], marker="*", color=REVIEW_FIRST_COLOUR, markeredgecolor="black", linestyle="",
                  markersize=12, label=f"review first: top hits in the budget ({n_first})")]
          if n_first is not None else []),
        Line2D([], [], marker="*", color="white", markeredgecolor="black", linestyle="",
               markersize=6 if n_first is not None else 10,
               label=f"{'other ' if n_first is not None else ''}hit: crystal p >= {crystal_threshold:.2f}"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _grid_pos(well: str, plate_format: int, drop: int = 1, drops: int = 1) -> tuple[int, int] | None:
    """(row, column) of one drop's cell in the drawn grid; None for a name that is no well or drop."""
    try:
        w = wells.parse_well(well, plate_format)
    except wells.InvalidWell:
        return None
    if not 1 <= drop <= drops:
        return None
    return w.row - 1, (w.col - 1) * drops + drop - 1
