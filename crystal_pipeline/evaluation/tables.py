"""The paper's tables, laid out as the paper prints them, for our numbers and for theirs.

A table is first built as a grid of strings (header row first); :func:`markdown_table` and
:func:`html_table` only render that grid (with :mod:`crystal_pipeline.reporting.markdown` and
:mod:`~crystal_pipeline.reporting.html`, which the plate report uses too), so the Markdown and
HTML reports can never show different numbers. Undefined values (NaN, None) render as an en dash.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from crystal_pipeline.classes import CLASS_TITLES
from crystal_pipeline.evaluation.metrics import ReviewShare, confusion_metrics
from crystal_pipeline.evaluation.paper import PAPER_TABLE3, PAPER_TABLE5
from crystal_pipeline.reporting import html, markdown
from crystal_pipeline.reporting.numbers import finite_or_none

UNDEFINED = "–"
Grid = list[list[str]]


def fmt(value, digits: int = 4) -> str:
    """A number for a table cell; NaN, infinity and None become an en dash."""
    number = finite_or_none(value, digits=None)
    return UNDEFINED if number is None else f"{number:.{digits}f}"


def fmt_ci(value, interval, digits: int = 4) -> str:
    """``0.7770 [0.7512, 0.8023]``: a number with its 95% interval (en dashes where undefined)."""
    if value is None or finite_or_none(value, digits=None) is None:
        return UNDEFINED
    if not interval:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]"


def scores_grid(result: Mapping) -> Grid:
    """The headline scores of a result (:func:`~crystal_pipeline.evaluation.results.model_metrics`)
    with their 95% bootstrap intervals."""
    return [["Score", "Value [95% interval]"],
            ["Accuracy (10-way)", fmt_ci(result["accuracy"], result["accuracy_ci95"])],
            ["Balanced accuracy (mean per-class recall)",
             fmt_ci(result["balanced_accuracy"], result["balanced_accuracy_ci95"])],
            ["Macro F1", fmt_ci(result["macro_f1"], result.get("macro_f1_ci95"))],
            ["Crystal AUC", fmt_ci(result["crystal_auc"], result["crystal_auc_ci95"])],
            [f"Images to review at crystal recall {result['crystal_recall_target']:.2f}",
             _percent(result["review_share_at_recall_target"])]]


def per_class_grid(per_class: Mapping[str, Mapping], titles: Sequence[str] = CLASS_TITLES) -> Grid:
    """One row per class: support, recall, precision, F1, one-vs-rest AUC."""
    grid: Grid = [["Class", "Support", "Recall", "Precision", "F1", "AUC"]]
    for title, row in zip(titles, per_class.values()):
        grid.append([title, str(int(row["support"])), fmt(row["recall"]), fmt(row["precision"]),
                     fmt(row["f1"]), fmt(row["auc"])])
    return grid


def calibration_grid(result: Mapping) -> Grid:
    """Expected calibration error before and after the model's temperature."""
    bins = result.get("ece_bins", 15)
    return [["Probabilities", "Temperature", f"ECE ({bins} bins)"],
            ["Softmax as trained", fmt(1.0, 3), fmt(result["ece_before"])],
            ["Calibrated (temperature fitted on val)", fmt(result["temperature"], 3), fmt(result["ece_after"])]]


def confusion_grid(confusion, titles: Sequence[str] = CLASS_TITLES, *, auc=None,
                   digits: int = 4) -> Grid:
    """Paper's Table 2/4 layout: counts, Total column, Recall column; Total, Precision, AUC rows."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    if len(titles) != k:
        raise ValueError(f"{len(titles)} titles for a {k}x{k} matrix")
    metrics = confusion_metrics(confusion)
    grid: Grid = [["Labels", *titles, "Total", "Recall"]]
    for i in range(k):
        grid.append([titles[i], *(str(int(c)) for c in confusion[i]),
                     str(int(confusion[i].sum())), fmt(metrics["recall"][i], digits)])
    grid.append(["Total", *(str(int(c)) for c in confusion.sum(axis=0)),
                 str(int(confusion.sum())), ""])
    grid.append(["Precision", *(fmt(p, digits) for p in metrics["precision"]),
                 "", f"Overall: {fmt(metrics['accuracy'], digits)}"])
    if auc is not None:
        grid.append(["AUC", *(fmt(a, digits) for a in auc), "", ""])
    return grid


CRYSTAL_TITLES = ("no-crystal", "has-crystal")


def crystal_grid(confusion_2x2, digits: int = 4) -> Grid:
    """Table 4's layout for a 2 x 2 (no-crystal, has-crystal) matrix."""
    return confusion_grid(confusion_2x2, CRYSTAL_TITLES, digits=digits)


def review_share_grid(shares: Sequence[ReviewShare]) -> Grid:
    grid: Grid = [["Crystal recall required", "Threshold on crystal_prob",
                   "Images to review", "Recall achieved"]]
    for s in shares:
        grid.append([f"{s.target_recall:.2f}", fmt(s.threshold, 4),
                     _percent(s.review_share),
                     fmt(s.achieved_recall, 4)])
    return grid


def _percent(share) -> str:
    number = finite_or_none(share, digits=None)
    return UNDEFINED if number is None else f"{number * 100:.1f}%"


def resolution_grid(ours: Mapping[int, tuple[float, float]] | None = None) -> Grid:
    """Table 3: paper's accuracy and time per resolution, ours beside them (accuracy in %)."""
    ours = dict(ours or {})
    grid: Grid = [["Resolution", "Paper accuracy (%)", "Paper avg. time (s)",
                   "Ours accuracy (%)", "Ours time (s)"]]
    for res in sorted(set(PAPER_TABLE3) | set(ours), reverse=True):
        paper = PAPER_TABLE3.get(res, (None, None))
        mine = ours.get(res, (None, None))
        grid.append([f"{res}×{res}", fmt(paper[0], 1), fmt(paper[1], 0), fmt(mine[0], 1),
                     fmt(mine[1], 1)])
    return grid


def model_comparison_grid(scores: Sequence[Mapping]) -> Grid:
    """Table 5: each model's accuracy, balanced accuracy, macro F1, crystal AUC (with 95%
    intervals), McNemar p against CrystalNet and prediction time, the paper's beside.

    ``scores`` are :func:`~crystal_pipeline.baselines.comparison.model_scores` rows:
    ``name``, ``accuracy`` (fraction) and the other keys above (missing ones show as a
    dash), ``predict_seconds`` and optionally ``feature_seconds`` (extraction, reported apart
    as in the paper's footnote). Paper rows are matched by name (:data:`PAPER_TABLE5`).
    """
    grid: Grid = [["Model", "Paper accuracy (%)", "Paper time (s)", "Ours accuracy (%) [95%]",
                   "Ours balanced accuracy (%) [95%]", "Ours macro F1 [95%]", "Ours crystal AUC [95%]",
                   "McNemar p vs CrystalNet", "Ours prediction time (s)", "Ours feature extraction (s)"]]
    names = [s["name"] for s in scores] + [n for n in PAPER_TABLE5 if n not in {s["name"] for s in scores}]
    by_name = {s["name"]: s for s in scores}
    for name in names:
        paper = PAPER_TABLE5.get(name, (None, None))
        mine = by_name.get(name, {})
        grid.append([name, fmt(paper[0], 1), fmt(paper[1], 0),
                     _percent_ci(mine.get("accuracy"), mine.get("accuracy_ci95")),
                     _percent_ci(mine.get("balanced_accuracy"), mine.get("balanced_accuracy_ci95")),
                     fmt_ci(mine.get("macro_f1"), mine.get("macro_f1_ci95"), 4), fmt_ci(mine.get("crystal_auc"), mine.get("crystal_auc_ci95")),
                     _p_value(mine.get("mcnemar_p_vs_crystalnet")), fmt(mine.get("predict_seconds"), 3),
                     fmt(mine.get("feature_seconds"), 1)])
    return grid


def _percent_ci(value, interval) -> str:
    scaled = None if finite_or_none(value, digits=None) is None else 100 * value
    return fmt_ci(scaled, None if not interval else [100 * v if v is not None else None for v in interval], 1)


def _p_value(p) -> str:
    number = finite_or_none(p, digits=None)
    if number is None:
        return UNDEFINED
    return "<0.0001" if number < 1e-4 else f"{number:.4f}"


def markdown_table(grid: Grid) -> str:
    """GitHub-flavoured Markdown; the first column is left-aligned, numbers right-aligned."""
    return markdown.table(grid[0], grid[1:], align="l" + "r" * (len(grid[0]) - 1))


def html_table(grid: Grid, caption: str = "") -> str:
    """A plain HTML table with header cells for the first row and column."""
    out = ['<table class="confusion">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead>" + html.row(grid[0], "th") + "</thead>")
    out.append("<tbody>")
    out += [html.row(r, row_header=True) for r in grid[1:]]
    out.append("</tbody></table>")
    return "\n".join(out)
