"""Table 5: every model's accuracy, crystal AUC and prediction time, the paper's beside ours."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from crystal_pipeline.evaluation.metrics import (
    binary_auc,
    confusion_matrix,
    confusion_metrics,
    crystal_probability,
    crystal_truth,
    predicted_classes,
)
from crystal_pipeline.evaluation.tables import markdown_table, model_comparison_grid

CRYSTALNET = "CrystalNet"


def model_scores(class_ids, probs_by_model: Mapping[str, np.ndarray],
                 predict_seconds: Mapping[str, float],
                 feature_seconds: Mapping[str, float] | None = None) -> list[dict]:
    """One row per model: ``name``, ``accuracy``, ``crystal_auc``, ``predict_seconds``,
    ``feature_seconds`` (None for models that read pixels), ``images``.

    Pass CrystalNet's probabilities and prediction time under the name ``"CrystalNet"`` so
    its row lines up with the paper's.
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    truth = crystal_truth(class_ids)
    feature_seconds = feature_seconds or {}
    rows = []
    for name, probs in probs_by_model.items():
        confusion = confusion_matrix(class_ids, predicted_classes(probs))
        rows.append({
            "name": name,
            "images": int(class_ids.size),
            "accuracy": confusion_metrics(confusion)["accuracy"],
            "crystal_auc": binary_auc(truth, crystal_probability(probs)),
            "predict_seconds": float(predict_seconds.get(name, float("nan"))),
            "feature_seconds": feature_seconds.get(name),
        })
    return rows


def table5_markdown(scores: list[dict], archive_description: str) -> str:
    """Table 5 as Markdown, labelled: paper on HWI data (17,033 images), ours on the archive."""
    n = scores[0]["images"] if scores else 0
    return "\n".join([
        f"Paper: HWI data, 17,033 validation images. Ours: {archive_description}, test split, {n} "
        "images. RF and Neural Net times exclude feature extraction (paper's footnote); ours is "
        "in its own column. Times from different hardware are not comparable across the two sides.",
        "",
        markdown_table(model_comparison_grid(scores)),
    ])
