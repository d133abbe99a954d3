"""Promotion: a staged model gets its version, is compared with production, and is registered.

One call, :func:`promote`, does the whole workflow DESIGN.md describes: move the staged
artifact to ``<models>/<version>/model.pt``; re-score the production model on today's
validation split (at its own resolution) rather than trust the number it got on an
older split; apply the not-worse rule; insert the new row, making it production when
it is not worse, in one transaction. The caller scores the new model (its validation
probabilities come out of training) and passes the scores in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from crystal_pipeline.evaluation import registry
from crystal_pipeline.evaluation.registry import Scores
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to a new model: its version and file, whether it became production,
    why, and the scores both models were compared on (``production_*`` None for the first)."""

    model_version: str
    path: Path
    promoted: bool
    reason: str
    scores: Scores
    production_version: str | None
    production_scores: Scores | None


def rescore(warehouse: Warehouse, layout: DataLayout, model_row: dict, *, device: str = "auto",
            workers: int | None = None) -> Scores:
    """A registered model's scores on today's validation split, at the model's resolution
    (tensors at that resolution are rewritten first when their validation ids are stale)."""
    from crystal_pipeline.model import load, predict_proba
    from crystal_pipeline.tensors import preparation

    from crystal_pipeline.model import calibration_of

    model = load(model_row["path"], device)
    val = preparation.current_val_split(warehouse, layout, model.resolution, workers=workers)
    temperature, _ = calibration_of(model.artifact_meta)
    return registry.score(val.class_ids, predict_proba(model, val.pixels), temperature)


def promote(warehouse: Warehouse, layout: DataLayout, staged_artifact: Path, scores: Scores, *, preset: str,
            resolution: int, trained_on: str, device: str = "auto", workers: int | None = None,
            now: datetime | None = None) -> PromotionDecision:
    """Version, compare and register the staged model; see the module docstring.

    ``scores`` are the new model's on today's validation split (:func:`registry.calibrate`:
    its temperature and calibrated threshold), and are written into the artifact first, so
    the model file carries them wherever it goes. Afterwards the staged file is gone, ``layout.model_path(version)`` holds it, its ``models`` row exists, and
    exactly one model is production. The row's ``parent_version`` and ``n_train_labels`` come
    from the artifact (a fine-tune's trainer wrote them; a from-scratch model has no parent).
    """
    from crystal_pipeline.model import add_calibration, load_artifact
    from crystal_pipeline.reporting.numbers import finite_or_none

    add_calibration(staged_artifact, temperature=scores.temperature,
                    crystal_threshold=finite_or_none(scores.crystal_threshold, None))
    lineage = load_artifact(staged_artifact)  # the trainer recorded the parent and the labels
    parent_version, n_train_labels = lineage.get("parent_version"), lineage.get("n_train_labels")
    del lineage
    version = registry.new_model_version(staged_artifact, now)
    final = layout.model_path(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged_artifact, final)
    current = registry.production_model(warehouse)
    current_scores = None
    if current is not None:
        current_scores = rescore(warehouse, layout, current, device=device, workers=workers)
    promoted, reason = registry.not_worse(scores, current_scores)
    registry.register(warehouse, model_version=version, preset=preset, resolution=resolution, path=final,
                      trained_on=trained_on, scores=scores, promote=promoted, parent_version=parent_version,
                      n_train_labels=None if n_train_labels is None else int(n_train_labels))
    return PromotionDecision(version, final, promoted, reason, scores,
                             None if current is None else current["model_version"], current_scores)
