"""One plate run: the model it resolved once, its checks, and its labels read back from ``predictions``.

A plate run has three steps after ingest (``plate_predictions``, ``plate_timeline``,
``plate_report``). Each used to resolve "the production model" itself, so a promotion
between the steps gave a report with one model's labels and another's name and threshold
(issue 18). Now ``plate_predictions`` resolves the model once and hands on a
:class:`PlateRun` (the version, its hit threshold, how labelling went); the later steps
read that version's rows from the warehouse (:func:`stored_labels`) instead of a pickle of
the labelling, so the report shows exactly what was stored.

:func:`prediction_checks` re-derives the plate's accounting from the warehouse after the
write (``images`` rows against the ``predictions`` rows of the run's model), not from the
labelling's own counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.plates.labelling import LabelledImage, LabelTimings, PlateLabels, QuarantinedImage
from crystal_pipeline.warehouse import ImageScope
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import predictions as prediction_table
from crystal_pipeline.wells import missing_wells, slot_name

#: ``images`` columns the plate steps read.
IMAGE_READ = ("image_id", "well", "drop", "plate_drops", "row", "path", "status", "error", "plate_format")


@dataclass(frozen=True)
class PlateRun:
    """What ``plate_predictions`` hands on: the one model of this plate run and its threshold.

    ``late_quarantine`` holds files ingest accepted but labelling could not decode (changed
    since ingest): the warehouse does not mark those, and the report must list them."""

    model_version: str
    crystal_threshold: float
    trained_on: str | None
    resolution: int
    timings: LabelTimings
    late_quarantine: tuple[QuarantinedImage, ...] = field(default=())
    # The hits' crystal positions (image id -> model.cam.CrystalPosition): the warehouse's
    # predictions table does not hold them, so the report gets them from the run.
    crystal_positions: Mapping[str, Any] = field(default_factory=dict)
    # Why this model labelled the plate, one sentence (plates.model_choice), and the visible
    # model's run beside a fused one on a UV plate: a second opinion, stored under its own version.
    reason: str = ""
    second: "PlateRun | None" = None

    @property
    def synthetic_model(self) -> bool:
        return self.trained_on == "synthetic"


def hit_threshold(model_row: dict, artifact_meta: dict | None) -> float:
    """The hit threshold a model labels plates with: its artifact's calibrated crystal_prob
    (95% crystal recall on validation), as ``crystal-pipeline label`` reads it; for an
    artifact from before calibration the registry's threshold, else 0.5."""
    from crystal_pipeline.model import calibration_of

    return calibration_of(artifact_meta, model_row.get("crystal_threshold"))[1]


def plate_run_of(model_row: dict, model, labels: PlateLabels, rows: pd.DataFrame, reason: str = "",
                 second: PlateRun | None = None) -> PlateRun:
    """The :class:`PlateRun` of a labelling of the ``images`` ``rows`` with ``model``
    (loaded from ``model_row``), chosen for ``reason``, with the ``second`` opinion's run."""
    at_ingest = set(rows.loc[rows["status"] == "quarantined", "image_id"])
    late = tuple(q for q in labels.quarantined if q.image_id not in at_ingest)
    positions = {r.image_id: r.crystal for r in labels.rows if r.crystal is not None}
    return PlateRun(str(model_row["model_version"]), hit_threshold(model_row, model.artifact_meta),
                    model_row.get("trained_on"), int(labels.resolution), labels.timings, late, positions,
                    reason, second)


def plate_format_of(rows: pd.DataFrame) -> int | None:
    """The format ingest decided for the plate's ``images`` rows (None without a valid well)."""
    formats = rows["plate_format"].dropna()
    return int(formats.iloc[0]) if len(formats) else None


def missing_of(rows: pd.DataFrame, plate_format: int | None) -> list[str]:
    """Missing wells and drops (``A01``, ``A01_2``) of the plate's ``images`` rows."""
    if not plate_format:
        return []
    drops = _drops(rows)
    present = [slot_name(w, int(d)) for w, d, r in zip(rows["well"], rows["drop"].fillna(1), rows["row"])
               if pd.notna(r)]
    return missing_wells(present, plate_format, drops)


def _drops(rows: pd.DataFrame) -> int:
    return int(rows["plate_drops"].max()) if len(rows) and rows["plate_drops"].notna().any() else 1


@dataclass(frozen=True)
class PredictionChecks:
    """The plate's accounting after the write, from the warehouse.

    ``accounted``: every ``images`` row of the plate is exactly one of labelled (a
    ``predictions`` row of the run's model) or quarantined; a report of a labelling that
    lost or invented rows is wrong, so this one blocks. ``complete``: nothing quarantined
    or missing; the report lists those wells, so it does not block."""

    files: int
    labelled: int
    quarantined: list[tuple[str, str]]
    missing: list[str]
    plate_format: int | None
    unaccounted: list[str]
    max_abs_deviation: float

    @property
    def accounted(self) -> bool:
        return not self.unaccounted

    @property
    def complete(self) -> bool:
        return not self.quarantined and not self.missing


def prediction_checks(warehouse, plate_id: str, inspection: str | None, run: PlateRun) -> PredictionChecks:
    """Re-derive the plate's accounting and the stored probabilities' sums from the warehouse."""
    rows = image_table.images_in(warehouse, ImageScope.of_plate(plate_id, inspection), IMAGE_READ)
    stored = prediction_table.plate_predictions(warehouse, plate_id, inspection, run.model_version,
                                                columns=("image_id", "probs"))
    quarantined = _quarantined(rows, run)
    labelled, held = list(stored["image_id"]), {q.image_id for q in quarantined}
    expected = set(rows["image_id"])
    unaccounted = sorted((expected - set(labelled) - held) | (set(labelled) & held) | (set(labelled) - expected)
                         | {i for i in labelled if labelled.count(i) > 1})
    sums = np.array([np.sum(p) for p in stored["probs"]]) if len(stored) else np.ones(0)
    fmt = plate_format_of(rows)
    return PredictionChecks(len(rows), len(stored), [(q.image_id, q.reason) for q in quarantined],
                            missing_of(rows, fmt), fmt, unaccounted,
                            float(np.abs(sums - 1).max()) if sums.size else 0.0)


def _quarantined(rows: pd.DataFrame, run: PlateRun) -> list[QuarantinedImage]:
    """Quarantined at ingest (``images.status``) and, from the run, at labelling."""
    out = [QuarantinedImage(r.image_id, r.well, Path(r.path), str(r.error), int(r.drop) if pd.notna(r.drop) else 1)
           for r in rows.itertuples(index=False) if r.status == "quarantined"]
    return out + list(run.late_quarantine)


def stored_labels(warehouse, plate_id: str, inspection: str | None, run: PlateRun) -> PlateLabels:
    """The plate's labels as stored in ``predictions`` for the run's model, with the files
    and quarantine of ``images``: what the report and the map are drawn from. ValueError
    when the stored rows do not account for the plate's files (an incomplete labelling)."""
    rows = image_table.images_in(warehouse, ImageScope.of_plate(plate_id, inspection), IMAGE_READ)
    stored = prediction_table.plate_predictions(warehouse, plate_id, inspection, run.model_version)
    images = rows.set_index("image_id")
    labelled = []
    for p in stored.itertuples(index=False):
        image = images.loc[p.image_id]
        drop = int(image["drop"]) if pd.notna(image["drop"]) else 1
        probs = tuple(float(v) for v in p.probs)
        if len(probs) != len(CLASS_NAMES):
            raise ValueError(f"prediction of {p.image_id} by {run.model_version} has {len(probs)} probabilities")
        labelled.append(LabelledImage(p.image_id, p.well, Path(image["path"]), int(p.class_id), str(p.class_name),
                                      float(p.crystal_prob), probs, drop, run.crystal_positions.get(p.image_id)))
    quarantined = _quarantined(rows, run)
    if len(labelled) + len(quarantined) != len(rows):
        raise ValueError(f"plate {plate_id} {inspection or ''}: {len(labelled)} predictions of model "
                         f"{run.model_version} + {len(quarantined)} quarantined != {len(rows)} files; "
                         "materialize plate_predictions for this plate again")
    return PlateLabels(rows=labelled, quarantined=quarantined, timings=run.timings, files=len(rows),
                       resolution=run.resolution, drops=_drops(rows))
