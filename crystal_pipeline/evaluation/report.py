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
from crystal_pipeline.evaluation.calibration import apply_temperature, reliability_bins
from crystal_pipeline.evaluation.marco import marco_grid
from crystal_pipeline.evaluation.results import model_metrics, read_metrics_json, write_metrics_json
from crystal_pipeline.evaluation.tables import (
    calibration_grid,
    confusion_grid,
    crystal_grid,
    fmt,
    fmt_ci,
    html_table,
    markdown_table,
    per_class_grid,
    review_share_grid,
    scores_grid,
)
from crystal_pipeline.files import atomic_write_bytes, atomic_write_text
from crystal_pipeline.reporting.embed import data_uri
from crystal_pipeline.reporting.evaluation_figures import (
    confusion_heatmap,
    filter_grid,
    reliability_figure,
    roc_figure,
)
from crystal_pipeline.reporting.html import escape
from crystal_pipeline.reporting.numbers import finite_or_none

REVIEW_RECALLS = (0.95, 0.99)


@dataclass
class Report:
    """A rendered evaluation.

    ``markdown`` links figures by relative file name (``crystal_roc.png``), for the report
    folder; :meth:`markdown_embedded` inlines them as base64 for places with no folder
    (the Dagster UI). ``result`` is the whole computation (``metrics.json``,
    :func:`~crystal_pipeline.evaluation.results.model_metrics`); ``metrics`` flattens its
    headline numbers to plain floats (NaN where undefined) for asset metadata.
    """

    markdown: str
    html: str
    figures: dict[str, bytes]
    metrics: dict[str, float]
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    def markdown_embedded(self) -> str:
        text = self.markdown
        for name, png in self.figures.items():
            text = text.replace(f"]({name})", f"]({data_uri(png)})")
        return text

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``report.md``, ``report.html``, the PNGs and ``metrics.json``; each file
        replaced atomically. ``metrics.json`` keeps the ``baselines`` the model comparison
        wrote there for the same model, split and images (docs/decisions.md)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        previous = read_metrics_json(out) or {}
        same = all(previous.get(k) == self.result.get(k) for k in ("model_version", "split", "n_images"))
        write_metrics_json(out, {**self.result, "baselines": previous.get("baselines", {}) if same else {}})
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
    model_version: str | None = None,
    split: str = "val",
    temperature: float = 1.0,
    first_layer_weights=None,
    extra_models: Mapping[str, np.ndarray] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> Report:
    """Evaluate ``probs`` (N x 10 softmax outputs) against ``class_ids`` (1..10) on ``split``
    and render the report.

    ``temperature`` (the model's, fitted on val) calibrates the probabilities first; every
    score is of the calibrated ones, and the calibration section shows the ECE of both.
    ``extra_models`` (name -> N x 10 probabilities on the same images, e.g. the baselines)
    add curves to the crystal ROC figure and rows to the AUC list, as the paper's Figure 5
    does. ``first_layer_weights`` (out, in, h, w) adds the Figure 3 filter grid.
    """
    raw, class_ids = _check(probs, class_ids)
    result = model_metrics(raw, class_ids, model_version=model_version or model_name, split=split,
                           temperature=temperature)
    probs = apply_temperature(raw, temperature) if temperature != 1.0 and raw.size else raw
    extra = {name: _check(p, class_ids)[0] for name, p in (extra_models or {}).items()}
    scores = _score(probs, class_ids, {model_name: probs, **extra})
    figures = _figures(scores, model_name, first_layer_weights)
    if class_ids.size:
        figures["reliability.png"] = _reliability(raw, probs, class_ids, temperature)
    metrics = _metrics(scores, model_name, result)
    tables = _tables(scores, result)
    sections = _sections(metrics, model_name, archive_description, scores.images, result)
    report = Report(
        markdown=_markdown(model_name, archive_description, sections, tables, figures),
        html=_html(model_name, archive_description, sections, tables, figures),
        figures=figures,
        metrics=metrics,
        tables=tables,
        result=result,
    )
    if out_dir is not None:
        report.write(out_dir)
    return report


def _reliability(raw: np.ndarray, calibrated: np.ndarray, class_ids: np.ndarray, temperature: float) -> bytes:
    from crystal_pipeline.evaluation.calibration import expected_calibration_error

    curves = {}
    for name, p in (("softmax as trained", raw), (f"calibrated (T = {temperature:.3f})", calibrated)):
        bins = reliability_bins(p, class_ids - 1)
        curves[name] = ([b.confidence for b in bins], [b.accuracy for b in bins], [b.count for b in bins],
                        expected_calibration_error(p, class_ids - 1))
    return reliability_figure(curves)


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


def _metrics(scores: _Scores, model_name: str, result: Mapping) -> dict[str, float]:
    """The headline numbers (from ``result``, the one computation): the model's first, then
    one crystal AUC per extra model."""
    crystal_aucs = {name: auc for name, (_, _, auc) in scores.curves.items()}
    metrics: dict[str, float] = {"images": float(result["n_images"])}
    for key in ("accuracy", "balanced_accuracy", "crystal_auc"):
        metrics[key] = result[key]
        metrics[f"{key}_ci95_low"], metrics[f"{key}_ci95_high"] = result[f"{key}_ci95"]
        if key == "balanced_accuracy":
            metrics["macro_f1"] = result["macro_f1"]
            metrics["macro_f1_ci95_low"], metrics["macro_f1_ci95_high"] = result["macro_f1_ci95"]
    metrics.update({
        "crystal_recall": scores.metrics2["recall"],
        "crystal_precision": scores.metrics2["precision"],
        "crystal_accuracy": scores.metrics2["accuracy"],
        "temperature": result["temperature"],
        "ece_before": result["ece_before"],
        "ece_after": result["ece_after"],
        "marco_accuracy": result["marco"]["accuracy"],
    })
    for s in scores.shares:
        key = f"{round(s.target_recall * 100)}"
        metrics[f"crystal_threshold_at_recall_{key}"] = s.threshold
        metrics[f"review_share_at_recall_{key}"] = s.review_share
    for name, auc in crystal_aucs.items():
        if name != model_name:
            metrics[f"crystal_auc[{name}]"] = auc
    return metrics


def _tables(scores: _Scores, result: Mapping) -> dict[str, list[list[str]]]:
    return {
        "scores": scores_grid(result),
        "per_class": per_class_grid(result["per_class"]),
        "calibration": calibration_grid(result),
        "table2_ours": confusion_grid(scores.confusion, auc=scores.auc10),
        "table2_paper": confusion_grid(PAPER_TABLE2["counts"], auc=PAPER_TABLE2["auc"]),
        "table4_ours": crystal_grid(scores.confusion2),
        "table4_paper": crystal_grid(PAPER_TABLE4["counts"]),
        "marco": marco_grid(result["marco"]),
        "review_share": review_share_grid(scores.shares),
        "crystal_auc": [["Model", "Crystal AUC"]]
        + [[name, fmt(auc)] for name, (_, _, auc) in scores.curves.items()]
        + [["CrystalNet (paper, HWI data)", fmt(PAPER_CRYSTAL_AUC)]],
    }


def _sections(metrics: Mapping[str, float], model_name: str, archive_description: str, images: int,
              result: Mapping) -> list:
    """(title, data label or None, table key or headline text), in report order."""
    ours = f"ours ({model_name} on {archive_description}, {result['split']} split, {images} images)"
    return [
        ("Headline", None, _headline(result, metrics, model_name)),
        ("Scores with 95% intervals", ours, "scores"),
        ("Per class", ours, "per_class"),
        ("Table 2: 10-way confusion matrix", ours, "table2_ours"),
        ("Table 2: 10-way confusion matrix", PAPER_DATA_LABEL, "table2_paper"),
        ("Table 4: crystal vs no-crystal", ours, "table4_ours"),
        ("Table 4: crystal vs no-crystal", PAPER_DATA_LABEL, "table4_paper"),
        ("MARCO's four classes", ours, "marco"),
        ("Figure 5: crystal ROC", None, "crystal_auc"),
        ("Screening: images left to review", ours, "review_share"),
        ("Calibration", ours, "calibration"),
    ]


def _headline(result: Mapping, metrics: Mapping[str, float], model_name: str) -> str:
    share95 = finite_or_none(result["review_share_at_recall_target"], digits=None)
    share = "–" if share95 is None else f"{100 * share95:.1f}%"
    return (f"{model_name} on the {result['split']} split ({result['n_images']} images): 10-way accuracy "
            f"{fmt_ci(result['accuracy'], result['accuracy_ci95'])} (paper 0.9080), balanced accuracy "
            f"{fmt_ci(result['balanced_accuracy'], result['balanced_accuracy_ci95'])}, macro F1 "
            f"{fmt_ci(result['macro_f1'], result['macro_f1_ci95'])}, crystal AUC {fmt_ci(result['crystal_auc'], result['crystal_auc_ci95'])} "
            f"(paper {PAPER_CRYSTAL_AUC:.4f}); brackets are 95% bootstrap intervals. Crystal recall "
            f"{fmt(metrics['crystal_recall'])} and precision {fmt(metrics['crystal_precision'])} "
            f"(paper 0.8380 / 0.9703). Keeping {100 * result['crystal_recall_target']:.0f}% of crystals "
            f"leaves {share} of images to review. Probabilities are calibrated (temperature "
            f"{fmt(result['temperature'], 3)}): ECE {fmt(result['ece_before'])} before, {fmt(result['ece_after'])} after.")


_CRYSTAL_IDS = sorted(CRYSTAL_CLASS_IDS)
_FIGURE_AFTER = {
    "Figure 5: crystal ROC": ["crystal_roc.png"],
    "Table 2: 10-way confusion matrix": ["confusion.png"],
    "Calibration": ["reliability.png"],
}
_CAPTIONS = {
    "crystal_roc.png": f"Crystal vs no-crystal ROC (crystal_prob = {' + '.join(f'p{c}' for c in _CRYSTAL_IDS)})",
    "confusion.png": "Confusion matrix, colour = share of the true class",
    "first_layer_filters.png": "Figure 3: first-layer filters",
    "reliability.png": "Reliability diagram: accuracy against confidence per bin, before and after temperature scaling",
}
_NOTES = {
    "Table 2: 10-way confusion matrix": "Rows are true classes, columns predicted. "
    "Undefined recall, precision or AUC (no image of the class, or none predicted) shows as –.",
    "Table 4: crystal vs no-crystal": f"has-crystal = classes {', '.join(map(str, _CRYSTAL_IDS))}; an image counts as "
    "predicted crystal when its predicted class is one of them.",
    "Per class": "Support is the number of true images of the class; recall, precision and F1 of a class "
    "with none show as –. Balanced accuracy is the mean of the recall column over the classes present.",
    "MARCO's four classes": "For tools that speak MARCO's outcomes: crystals = classes 3, 5, 7; precipitate = "
    "2, 6, 8; clear = 1; other = 4, 9, 10. Rows map the true class; the prediction is the arg-max of the four "
    "summed probabilities (metrics.json: marco, accuracy with its 95% bootstrap interval).",
    "Calibration": "Temperature scaling (one T fitted on the val split, never on the split reported here) "
    "divides the log-probabilities by T; the ranking and the predicted class do not change. ECE: "
    "expected calibration error over 15 equal-width confidence bins.",
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
