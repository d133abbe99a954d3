"""Table 5: every model's accuracy, balanced accuracy, macro F1 and crystal AUC with 95% intervals,
McNemar p against CrystalNet on the same images, and prediction time; the paper's beside ours."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from crystal_pipeline.evaluation.results import classifier_scores, comparison_entry
from crystal_pipeline.evaluation.tables import markdown_table, model_comparison_grid

CRYSTALNET = "CrystalNet"


def model_scores(class_ids, probs_by_model: Mapping[str, np.ndarray],
                 predict_seconds: Mapping[str, float],
                 feature_seconds: Mapping[str, float] | None = None) -> list[dict]:
    """One row per model: ``name``, ``images``, ``accuracy``, ``balanced_accuracy``,
    ``macro_f1``, ``crystal_auc`` (each accuracy and the AUC with a seeded 95% bootstrap
    interval, ``*_ci95``), ``mcnemar_p_vs_crystalnet`` (the exact McNemar p-value of the
    model's right/wrong answers against CrystalNet's on the same images; None for
    CrystalNet itself or when it is absent), ``predict_seconds`` and ``feature_seconds``
    (None for models that read pixels).

    Pass CrystalNet's probabilities and prediction time under the name ``"CrystalNet"`` so
    its row lines up with the paper's (and the others are tested against it).
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    feature_seconds = feature_seconds or {}
    reference = probs_by_model.get(CRYSTALNET)
    rows = []
    for name, probs in probs_by_model.items():
        if reference is None or name == CRYSTALNET:
            scores = {**classifier_scores(probs, class_ids), "mcnemar_p_vs_crystalnet": None}
        else:
            scores = comparison_entry(probs, reference, class_ids)
        scores["images"] = scores.pop("n_images")
        rows.append({
            "name": name,
            **scores,
            "predict_seconds": float(predict_seconds.get(name, float("nan"))),
            "feature_seconds": feature_seconds.get(name),
        })
    return rows


BASELINE_KEYS = ("accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "macro_f1", "macro_f1_ci95",
                 "crystal_auc", "crystal_auc_ci95", "mcnemar_p_vs_crystalnet", "only_crystalnet_right",
                 "only_baseline_right")


def baselines_for_metrics(scores: list[dict]) -> dict[str, dict]:
    """The ``baselines`` part of ``metrics.json``: every row but CrystalNet's, by name."""
    return {row["name"]: {k: row[k] for k in BASELINE_KEYS if k in row}
            for row in scores if row["name"] != CRYSTALNET}


def table5_markdown(scores: list[dict], archive_description: str, split: str = "val") -> str:
    """Table 5 as Markdown, labelled: paper on HWI data (17,033 images), ours on the archive's ``split``."""
    n = scores[0]["images"] if scores else 0
    return "\n".join([
        f"Paper: HWI data, 17,033 validation images. Ours: {archive_description}, {split} split, "
        f"{n} images. Brackets: 95% bootstrap intervals (images resampled, seed 0). McNemar p: exact "
        "test of each model's right/wrong answers against CrystalNet's on the same images; an "
        "order between two models stands only where p is small. RF and Neural Net times exclude "
        "feature extraction (paper's footnote); ours is in its own column. Times from different "
        "hardware are not comparable across the two sides.",
        "",
        markdown_table(model_comparison_grid(scores)),
    ])
