"""The whole evaluation of one model as a report: the paper's tables and figures, ours beside theirs.

:func:`evaluation_report` computes everything from the probabilities, so what the Dagster
asset shows, what lands in the report folder and what the tests check are the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from crystal_pipeline.classes import CLASS_TITLES, CRYSTAL_CLASS_IDS, NUM_CLASSES
from crystal_pipeline.evaluation.metrics import (
    ReviewShare,
    binary_auc,
    binary_metrics,
    confusion_matrix,
    confusion_metrics,
    crystal_confusion,
    crystal_probability,
    crystal_truth,
    one_vs_rest_auc,
    predicted_classes,
    review_shares,
    roc_curve,
)
from crystal_pipeline.evaluation.paper import (
    PAPER_CRYSTAL_AUC,
    PAPER_DATA_LABEL,
    PAPER_TABLE2,
    PAPER_TABLE4,
)
from crystal_pipeline.evaluation.tables import (
    confusion_grid,
    crystal_grid,
    fmt,
    html_table,
    markdown_table,
    review_share_grid,
)
from crystal_pipeline.files import atomic_write_bytes, atomic_write_text
from crystal_pipeline.reporting.embed import data_uri
from crystal_pipeline.reporting.evaluation_figures import confusion_heatmap, filter_grid, roc_figure
from crystal_pipeline.reporting.html import escape
from crystal_pipeline.reporting.numbers import finite_or_none

REVIEW_RECALLS = (0.95, 0.99)


@dataclass
class Report:
    """A rendered evaluation.

    ``markdown`` links figures by relative file name (``crystal_roc.png``), for the report
    folder; :meth:`markdown_embedded` inlines them as base64 for places with no folder
    (the Dagster UI). ``metrics`` holds the headline numbers as plain floats (NaN where
    undefined) for asset metadata and the ``models`` table.
    """

    markdown: str
    html: str
    figures: dict[str, bytes]
    metrics: dict[str, float]
    tables: dict[str, list[list[str]]] = field(default_factory=dict)

    def markdown_embedded(self) -> str:
        text = self.markdown
        for name, png in self.figures.items():
            text = text.replace(f"]({name})", f"]({data_uri(png)})")
        return text

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``report.md``, ``report.html`` and the PNGs; each file replaced atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, png in self.figures.items():
            atomic_write_bytes(out / name, png)
        atomic_write_text(out / "report.html", self.html)
        atomic_write_text(out / "report.md", self.markdown)
        return out


def _check(probs, class_ids) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    class_ids = np.asarray(class_ids, dtype=np.int64).ravel()
    if probs.shape != (class_ids.size, NUM_CLASSES):
        raise ValueError(f"probabilities of shape {probs.shape} for {class_ids.size} labels; "
                         f"expected ({class_ids.size}, {NUM_CLASSES})")
    return probs, class_ids


def evaluation_report(
    probs,
    class_ids,
    *,
    model_name: str,
    archive_description: str,
    first_layer_weights=None,
    extra_models: Mapping[str, np.ndarray] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> Report:
    """Evaluate ``probs`` (N x 10) against ``class_ids`` (1..10) and render the report.

    ``extra_models`` (name -> N x 10 probabilities on the same images, e.g. the baselines)
    add curves to the crystal ROC figure and rows to the AUC list, as the paper's Figure 5
    does. ``first_layer_weights`` (out, in, h, w) adds the Figure 3 filter grid.
    """
    probs, class_ids = _check(probs, class_ids)
    extra = {name: _check(p, class_ids)[0] for name, p in (extra_models or {}).items()}
    scores = _score(probs, class_ids, {model_name: probs, **extra})
    figures = _figures(scores, model_name, first_layer_weights)
    metrics = _metrics(scores, model_name)
    tables = _tables(scores)
    sections = _sections(metrics, model_name, archive_description, scores.images)
    report = Report(
        markdown=_markdown(model_name, archive_description, sections, tables, figures),
        html=_html(model_name, archive_description, sections, tables, figures),
        figures=figures,
        metrics=metrics,
        tables=tables,
    )
    if out_dir is not None:
        report.write(out_dir)
    return report


@dataclass(frozen=True)
class _Scores:
    """Every number the report shows, computed once from the probabilities."""

    images: int
    confusion: np.ndarray  # 10 x 10
    auc10: np.ndarray  # one-vs-rest AUC per class
    confusion2: np.ndarray  # 2 x 2 crystal vs no-crystal (Table 4)
    metrics10: dict
    metrics2: dict
    shares: list[ReviewShare]
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]]  # model -> (fpr, tpr, crystal AUC)


def _score(probs: np.ndarray, class_ids: np.ndarray, models: Mapping[str, np.ndarray]) -> _Scores:
    """The 10-way and crystal scores of ``probs``, and a crystal ROC curve for each of ``models``."""
    confusion = confusion_matrix(class_ids, predicted_classes(probs))
    truth = crystal_truth(class_ids)
    confusion2 = crystal_confusion(class_ids, probs)
    curves = {}
    for name, p in models.items():
        score = crystal_probability(p)
        fpr, tpr, _ = roc_curve(truth, score)
        curves[name] = (fpr, tpr, binary_auc(truth, score))
    return _Scores(
        images=int(class_ids.size),
        confusion=confusion,
        auc10=one_vs_rest_auc(probs, class_ids),
        confusion2=confusion2,
        metrics10=confusion_metrics(confusion),
        metrics2=binary_metrics(confusion2),
        shares=review_shares(truth, crystal_probability(probs), REVIEW_RECALLS),
        curves=curves,
    )


def _figures(scores: _Scores, model_name: str, first_layer_weights) -> dict[str, bytes]:
    figures = {
        "crystal_roc.png": roc_figure(scores.curves),
        "confusion.png": confusion_heatmap(scores.confusion, CLASS_TITLES, title=f"{model_name}: confusion"),
    }
    if first_layer_weights is not None:
        figures["first_layer_filters.png"] = filter_grid(first_layer_weights)
    return figures


def _metrics(scores: _Scores, model_name: str) -> dict[str, float]:
    """The headline numbers: the model's first, then one crystal AUC per extra model."""
    crystal_aucs = {name: auc for name, (_, _, auc) in scores.curves.items()}
    metrics: dict[str, float] = {
        "images": float(scores.images),
        "accuracy": scores.metrics10["accuracy"],
        "crystal_auc": crystal_aucs[model_name],
        "crystal_recall": scores.metrics2["recall"],
        "crystal_precision": scores.metrics2["precision"],
        "crystal_accuracy": scores.metrics2["accuracy"],
    }
    for s in scores.shares:
        key = f"{round(s.target_recall * 100)}"
        metrics[f"crystal_threshold_at_recall_{key}"] = s.threshold
        metrics[f"review_share_at_recall_{key}"] = s.review_share
    for name, auc in crystal_aucs.items():
        if name != model_name:
            metrics[f"crystal_auc[{name}]"] = auc
    return metrics


def _tables(scores: _Scores) -> dict[str, list[list[str]]]:
    return {
        "table2_ours": confusion_grid(scores.confusion, auc=scores.auc10),
        "table2_paper": confusion_grid(PAPER_TABLE2["counts"], auc=PAPER_TABLE2["auc"]),
        "table4_ours": crystal_grid(scores.confusion2),
        "table4_paper": crystal_grid(PAPER_TABLE4["counts"]),
        "review_share": review_share_grid(scores.shares),
        "crystal_auc": [["Model", "Crystal AUC"]]
        + [[name, fmt(auc)] for name, (_, _, auc) in scores.curves.items()]
        + [["CrystalNet (paper, HWI data)", fmt(PAPER_CRYSTAL_AUC)]],
    }


def _sections(metrics: Mapping[str, float], model_name: str, archive_description: str, images: int) -> list:
    """(title, data label or None, table key or headline text), in report order."""
    ours = f"ours ({model_name} on {archive_description}, test split, {images} images)"
    return [
        ("Headline", None, _headline(metrics, model_name)),
        ("Table 2: 10-way confusion matrix", ours, "table2_ours"),
        ("Table 2: 10-way confusion matrix", PAPER_DATA_LABEL, "table2_paper"),
        ("Table 4: crystal vs no-crystal", ours, "table4_ours"),
        ("Table 4: crystal vs no-crystal", PAPER_DATA_LABEL, "table4_paper"),
        ("Figure 5: crystal ROC", None, "crystal_auc"),
        ("Screening: images left to review", ours, "review_share"),
    ]


def _headline(metrics: Mapping[str, float], model_name: str) -> str:
    share95 = finite_or_none(metrics.get("review_share_at_recall_95"), digits=None)
    share = "–" if share95 is None else f"{100 * share95:.1f}%"
    return (f"{model_name}: 10-way accuracy {fmt(metrics['accuracy'])} (paper 0.9080), "
            f"crystal AUC {fmt(metrics['crystal_auc'])} (paper {PAPER_CRYSTAL_AUC:.4f}), "
            f"crystal recall {fmt(metrics['crystal_recall'])} and precision "
            f"{fmt(metrics['crystal_precision'])} (paper 0.8380 / 0.9703). "
            f"Keeping 95% of crystals leaves {share} of images to review.")


_CRYSTAL_IDS = sorted(CRYSTAL_CLASS_IDS)
_FIGURE_AFTER = {
    "Figure 5: crystal ROC": ["crystal_roc.png"],
    "Table 2: 10-way confusion matrix": ["confusion.png"],
}
_CAPTIONS = {
    "crystal_roc.png": f"Crystal vs no-crystal ROC (crystal_prob = {' + '.join(f'p{c}' for c in _CRYSTAL_IDS)})",
    "confusion.png": "Confusion matrix, colour = share of the true class",
    "first_layer_filters.png": "Figure 3: first-layer filters",
}
_NOTES = {
    "Table 2: 10-way confusion matrix": "Rows are true classes, columns predicted. "
    "Undefined recall, precision or AUC (no image of the class, or none predicted) shows as –.",
    "Table 4: crystal vs no-crystal": f"has-crystal = classes {', '.join(map(str, _CRYSTAL_IDS))}; an image counts as "
    "predicted crystal when its predicted class is one of them.",
    "Screening: images left to review": "Every image with crystal_prob at or above the "
    "threshold goes to a person; the threshold is the highest one that keeps the required "
    "share of crystal images.",
}


def _walk(sections, figures):
    """Yield (kind, payload) in report order, figures placed after their last table."""
    seen = set()
    titles = [t for t, _, _ in sections]
    for i, (title, label, body) in enumerate(sections):
        if title not in seen:
            seen.add(title)
            yield "heading", title
            if title in _NOTES:
                yield "note", _NOTES[title]
        if label:
            yield "label", label
        yield ("text" if label is None and title == "Headline" else "table"), body
        last_of_title = title not in titles[i + 1:]
        if last_of_title:
            for name in _FIGURE_AFTER.get(title, []):
                if name in figures:
                    yield "figure", name
    if "first_layer_filters.png" in figures:
        yield "heading", "Figure 3: first-layer filters"
        yield "figure", "first_layer_filters.png"


def _markdown(model_name, archive, sections, tables, figures) -> str:
    out = [f"# Evaluation of {model_name}", "",
           f"Ours: {archive}. Paper: {PAPER_DATA_LABEL}. Numbers from different data "
           "are not directly comparable; the paper's are shown for scale.", ""]
    for kind, payload in _walk(sections, figures):
        if kind == "heading":
            out += [f"## {payload}", ""]
        elif kind in ("note", "text"):
            out += [payload, ""]
        elif kind == "label":
            out += [f"**{payload[0].upper()}{payload[1:]}**", ""]
        elif kind == "table":
            out += [markdown_table(tables[payload]), ""]
        elif kind == "figure":
            out += [f"![{_CAPTIONS.get(payload, payload)}]({payload})", ""]
    return "\n".join(out)


def _html(model_name, archive, sections, tables, figures) -> str:
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           f"<title>Evaluation of {escape(model_name)}</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
           "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
           "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}"
           "th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
           f"<h1>Evaluation of {escape(model_name)}</h1>",
           f"<p>Ours: {escape(archive)}. Paper: {escape(PAPER_DATA_LABEL)}. Numbers from "
           "different data are not directly comparable; the paper's are shown for scale.</p>"]
    for kind, payload in _walk(sections, figures):
        if kind == "heading":
            out.append(f"<h2>{escape(payload)}</h2>")
        elif kind in ("note", "text"):
            out.append(f"<p>{escape(payload)}</p>")
        elif kind == "label":
            out.append(f"<h3>{escape(payload[0].upper() + payload[1:])}</h3>")
        elif kind == "table":
            out.append(html_table(tables[payload]))
        elif kind == "figure":
            out.append(f'<figure><img src="{payload}" alt="{escape(_CAPTIONS.get(payload, payload))}">'
                       f"<figcaption>{escape(_CAPTIONS.get(payload, payload))}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)
