"""Promotion: a staged model gets its version, is compared with production, and is registered.

One call, :func:`promote`, does the whole workflow DESIGN.md describes, in an order that
loses nothing when the process dies at any step (issue 18; docs/reliability.md lists the
crash points and what a re-run finds):

1. write the new model's calibration into the staged artifact (skipped when it is there);
2. if a ``models`` row already holds this file (same sha256), the work was done by a run
   that died after its row: remove the staged file and return that row's decision;
3. re-score the production model of the new one's kind (``in_channels``: visible, or
   visible + UV) on today's validation split (at its own resolution)
   rather than trust the number it got on an older split; a production file that is
   missing or not the registered one is *unusable*, which never blocks a promotion;
4. decide (:func:`registry.promotion_decision`): below the accuracy floor never
   production, else an unusable production is replaced, else the not-worse rule;
5. copy the staged file to ``<models>/<version>/model.pt`` (atomically; a copy left by a
   killed run with the same content is adopted, keeping its version) and check its sha256;
6. insert the row (idempotent per sha256), production or not, in one transaction;
7. only then delete the staged file.

The caller scores the new model (its validation probabilities come out of training) and
passes the scores and the accuracy floor in.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from crystal_pipeline.evaluation import registry
from crystal_pipeline.evaluation.registry import AccuracyFloor, Scores
from crystal_pipeline.faults import crash_point
from crystal_pipeline.files import atomic_write, file_sha256
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to a new model: its version and file, whether it became production,
    why, and the scores both models were compared on (``production_*`` None for the first,
    ``production_scores`` None too when the production file was unusable: ``production_problem``)."""

    model_version: str
    path: Path
    promoted: bool
    reason: str
    scores: Scores
    production_version: str | None
    production_scores: Scores | None
    floor: AccuracyFloor | None = None
    production_problem: str | None = None


def rescore(warehouse: Warehouse, layout: DataLayout, model_row: dict, *, device: str = "auto",
            workers: int | None = None, crop: str = "centre") -> Scores:
    """A registered model's scores on today's validation split, at the model's resolution
    (tensors at that resolution are rewritten first when their validation ids are stale).
    The file is checked against the row's sha256 before it is loaded (ModelIntegrityError)."""
    from crystal_pipeline.model import calibration_of, predict_proba
    from crystal_pipeline.model.fusion import model_inputs
    from crystal_pipeline.tensors import preparation

    model = registry.load_registered(model_row, device)
    crash_point("promotion.during_rescore")
    val = preparation.current_val_split(warehouse, layout, model.resolution, workers=workers, crop=crop)
    temperature, _ = calibration_of(model.artifact_meta)
    return registry.score(val.class_ids, predict_proba(model, model_inputs(model, val)), temperature)


def promote(warehouse: Warehouse, layout: DataLayout, staged_artifact: Path, scores: Scores, *,
            floor: AccuracyFloor, preset: str, resolution: int, trained_on: str, device: str = "auto",
            workers: int | None = None, now: datetime | None = None, crop: str = "centre") -> PromotionDecision:
    """Version, compare and register the staged model; see the module docstring.

    ``scores`` are the new model's on today's validation split (:func:`registry.calibrate`:
    its temperature and calibrated threshold), and are written into the artifact first, so
    the model file carries them wherever it goes; ``floor`` is the accuracy it must reach to
    become production (:func:`registry.floor_for`). Afterwards the staged file is gone,
    ``layout.model_path(version)`` holds it, its ``models`` row exists, and at most one model
    of its kind (``in_channels``) is production. The row's ``parent_version`` and ``n_train_labels`` come from the artifact
    (a fine-tune's trainer wrote them; a from-scratch model has no parent). Calling it again
    with the same staged file after a crash completes the work and registers nothing twice.
    """
    staged = Path(staged_artifact)
    lineage = _calibrated(staged, scores)
    registry.record_input_channels(warehouse)  # rows from before the column: their kind, from their files
    sha = file_sha256(staged)
    done = registry.model_by_sha256(warehouse, sha)
    if done is not None:  # a run killed after its row: the model is safe, only the staged copy is left
        staged.unlink(missing_ok=True)
        return PromotionDecision(done["model_version"], Path(done["path"]), bool(done["is_production"]),
                                 f"already registered as {done['model_version']} by an earlier attempt", scores,
                                 None, None, floor)
    in_channels = int(lineage["in_channels"])
    current, current_scores, problem = _production_now(warehouse, layout, device, workers, crop, in_channels)
    promoted, reason = registry.promotion_decision(scores, current_scores, floor, production_problem=problem)
    version = _adoptable_version(layout, sha) or registry.new_model_version(staged, now)
    final = _copy_verified(staged, layout.model_path(version), sha)
    n_train_labels = lineage.get("n_train_labels")
    registry.register(warehouse, model_version=version, preset=preset, resolution=resolution, path=final,
                      trained_on=trained_on, scores=scores, promote=promoted,
                      parent_version=lineage.get("parent_version"),
                      n_train_labels=None if n_train_labels is None else int(n_train_labels),
                      in_channels=in_channels)
    crash_point("promotion.after_row")
    staged.unlink(missing_ok=True)
    return PromotionDecision(version, final, promoted, reason, scores,
                             None if current is None else current["model_version"], current_scores, floor, problem)


def _calibrated(staged: Path, scores: Scores) -> dict:
    """Write the calibration into the staged artifact unless it holds exactly it already (a
    re-run must not change the file's bytes, its sha256 is the registration key); returns
    the lineage fields the trainer recorded and the pictures the model reads (``in_channels``)."""
    from crystal_pipeline.model import add_calibration, load_artifact
    from crystal_pipeline.reporting.numbers import finite_or_none

    artifact = load_artifact(staged)
    threshold = finite_or_none(scores.crystal_threshold, None)
    wanted = (float(scores.temperature), None if threshold is None else float(threshold))
    lineage = {**{k: artifact.get(k) for k in ("parent_version", "n_train_labels")},
               "in_channels": registry.channels_of_artifact(artifact)}
    if (artifact.get("temperature"), artifact.get("crystal_threshold")) != wanted:
        del artifact
        add_calibration(staged, temperature=scores.temperature, crystal_threshold=threshold)
    return lineage


def _production_now(warehouse: Warehouse, layout: DataLayout, device: str, workers: int | None,
                    crop: str = "centre", in_channels: int = 1) -> tuple[dict | None, Scores | None, str | None]:
    """The production row of the candidate's kind (``in_channels``), its scores on today's
    split, and why it is unusable (its file missing, damaged or not the registered one: then
    no scores), for the decision."""
    from crystal_pipeline.model import ArtifactError

    current = registry.production_model(warehouse, in_channels)
    if current is None:
        return None, None, None
    try:
        return current, rescore(warehouse, layout, current, device=device, workers=workers, crop=crop), None
    except (registry.ModelIntegrityError, ArtifactError) as error:
        return current, None, str(error)


def _adoptable_version(layout: DataLayout, sha: str) -> str | None:
    """The version folder a killed run already copied this file into (same full sha256), if
    any: versions end in the file's short hash, so only those folders are hashed."""
    for path in sorted(layout.models_dir.glob(f"*-{sha[:8]}/model.pt")):
        if file_sha256(path) == sha:
            return path.parent.name
    return None


def _copy_verified(staged: Path, final: Path, sha: str) -> Path:
    """``staged`` copied to ``final`` atomically (kept when it holds the same bytes), then
    re-hashed: the row is written only for a file that is exactly the staged one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not (final.is_file() and file_sha256(final) == sha):
        with staged.open("rb") as source:
            atomic_write(final, lambda out: shutil.copyfileobj(source, out))
    crash_point("promotion.after_move")
    if file_sha256(final) != sha:
        raise RuntimeError(f"{final} differs from the staged model {staged} after the copy; nothing registered")
    crash_point("promotion.before_row")
    return final
