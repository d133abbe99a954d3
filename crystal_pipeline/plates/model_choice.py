"""Which registered model labels a plate, and why, in one sentence (issue 20 items 3 and 7).

The registry keeps one production model per kind of input (``models.in_channels``: 1 reads
the visible picture, 2 the visible and the UV picture stacked, ``model.fusion``). A plate
with UV pictures is labelled by the production fused model; a plate without them by the
production visible model. Where the fused model labels a UV plate and a visible production
model exists too, the visible one labels it as well: a second opinion the report can colour
the plate map by, never required (no visible model: no second opinion, no error). When no
production model fits the plate (only a fused one, and the plate has no UV pictures), the
choice fails saying what to do, as before the choice existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crystal_pipeline.evaluation import registry
from crystal_pipeline.ingest.archive import WellFile
from crystal_pipeline.model.fusion import FUSED_CHANNELS as FUSED
from crystal_pipeline.model.fusion import VISIBLE_CHANNELS as VISIBLE
from crystal_pipeline.plates.fused_labelling import no_uv_problem


@dataclass(frozen=True)
class PlateModels:
    """The plate's model of record (``models`` row), why it was chosen, and the visible model's
    row as a second opinion (None unless the record is fused and a visible model is production)."""

    record: dict
    reason: str
    second: dict | None = None


def plate_has_uv(files: Sequence[WellFile]) -> bool:
    """Whether the plate has at least one accepted UV picture."""
    return any(f.imaging == "uv" and f.error is None for f in files)


def input_channels(row: dict) -> int:
    """A ``models`` row's input channels; unknown (NULL: a file that could not be read) counts as visible."""
    try:
        return int(row.get("in_channels"))
    except (TypeError, ValueError):
        return VISIBLE


def choose_models(warehouse, has_uv: bool, model_version: str | None = None) -> PlateModels:
    """The models that label a plate with (``has_uv``) or without UV pictures; ``model_version``
    (the run's config) names the model of record instead. LookupError, saying what to do, when no
    registered model fits."""
    registry.record_input_channels(warehouse)  # rows from before the column: their kind, from their files
    visible = registry.production_model(warehouse, VISIBLE)
    fused = registry.production_model(warehouse, FUSED)
    if model_version:
        record = registry.model_row(warehouse, model_version)
        reason = f"Model {record['model_version']} was named in the run's config (model_version)."
    elif has_uv and fused is not None:
        record, reason = fused, "The plate has UV pictures, so the production fused (visible + UV) model labelled it."
    elif visible is not None:
        record = visible
        reason = ("The plate has UV pictures but no fused (visible + UV) model is production, so the production "
                  "visible model labelled its visible pictures." if has_uv else
                  "The plate has no UV pictures, so the production visible model labelled it.")
    elif fused is not None:
        raise LookupError(no_uv_problem(str(fused["model_version"])) + "; no visible model is production")
    else:
        record, reason = registry.model_row(warehouse), ""  # raises: no production model, with what to do
    second = visible if has_uv and input_channels(record) == FUSED and visible is not None else None
    return PlateModels(record, reason, second)


def label_second_opinion(row: dict, files: Sequence[WellFile], rows, *, device: str, batch_size: int,
                         precision: str):
    """``(PlateRun, PlateLabels, None)`` of the visible model ``row`` on the plate's ``files`` (its
    ``images`` ``rows``), or ``(None, None, why)`` when its file is damaged or it cannot run:
    a second opinion never stops the plate. No crystal positions (the report draws the record's)."""
    from crystal_pipeline.model import ArtifactError
    from crystal_pipeline.plates.labelling import label_plate
    from crystal_pipeline.plates.plate_run import plate_run_of

    try:
        model = registry.load_registered(row, device)
        labels = label_plate(files, model, batch_size=batch_size, precision=precision)
    except (registry.ModelIntegrityError, ArtifactError, ValueError) as error:
        return None, None, f"no second opinion from {row.get('model_version')}: {error}"
    return plate_run_of(row, model, labels, rows), labels, None
