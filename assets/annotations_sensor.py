"""The annotations sensor: new or changed annotation CSVs (a reviewer's corrections among them)
refresh the labels and tensors, and enough new reviews retrain the model.

Each tick hashes ``<raw_dir>/annotations/*.csv`` (names and contents). A signature the
instance already ingested (the latest ``annotations`` materialization records it) or the
cursor already requested never runs again, so an unchanged folder costs one hash per
tick. A changed folder requests ``refresh_labels``: annotations -> consensus_labels ->
image_tensors -> normalization_stats. When at least ``CRYSTAL_FINETUNE_MIN_REVIEWS``
(default 200) reviewed wells arrived since the last training (the production model's
registration, of either kind, the latest ``crystalnet_model`` materialization, this
sensor's last training request, whichever is latest), it requests
``refresh_labels_and_train`` instead, which also trains ``crystalnet_model``: a fine-tune
of the production model of the kind the labels train (fused when labelled drops have UV
pictures, else visible), from scratch when that kind has none; promotion still decides
whether the new model replaces production (of its kind).
"""

import json
import os
from datetime import datetime, timezone

import dagster as dg

from assets.ingest import ANNOTATIONS_SIGNATURE
from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.review_arrivals import annotations_signature, reviewed_wells_since
from crystal_pipeline.tensors import preparation
from crystal_pipeline.warehouse import models as model_table
from resources import StorageResource, WarehouseResource

LABEL_ASSETS = ("annotations", "consensus_labels", "image_tensors", "normalization_stats")
MIN_REVIEWS_DEFAULT = 200

refresh_labels_job = dg.define_asset_job(
    "refresh_labels", selection=dg.AssetSelection.assets(*LABEL_ASSETS),
    description="Re-read the annotation CSVs (reviews included), agree labels, rewrite tensors and statistics.")
refresh_labels_and_train_job = dg.define_asset_job(
    "refresh_labels_and_train", selection=dg.AssetSelection.assets(*LABEL_ASSETS, "crystalnet_model"),
    description=("As refresh_labels, then train CrystalNet on the corrected labels; promotion decides whether it "
                 "replaces the production model."))


def ingested_signature(instance: dg.DagsterInstance) -> str | None:
    """The annotations signature the latest ``annotations`` materialization read, if any."""
    records = instance.fetch_materializations(dg.AssetKey("annotations"), limit=1).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get(ANNOTATIONS_SIGNATURE)
    return None if value is None else value.value


def last_trained_at(instance: dg.DagsterInstance) -> datetime | None:
    """When ``crystalnet_model`` last materialized (promoted or not: either way it learnt from the
    reviews there were), from the instance's records."""
    records = instance.fetch_materializations(dg.AssetKey("crystalnet_model"), limit=1).records
    return datetime.fromtimestamp(records[0].timestamp, tz=timezone.utc) if records else None


def finetune_run_config(has_production: bool) -> dict:
    """A training request fine-tunes the production model on the corrected labels (preset
    ``finetune``, ``init_from: production``, which the asset resolves to the production model
    of the kind it trains); with no production model of that kind yet it trains from scratch
    with the asset's default preset."""
    if not has_production:
        return {}
    return {"ops": {"crystalnet_model": {"config": {"preset": "finetune", "init_from": "production"}}}}


def evaluate_annotations(raw_dir, cursor: str | None, *, ingested: str | None, trained_at: list[datetime | None],
                         min_reviews: int = MIN_REVIEWS_DEFAULT, now: datetime | None = None,
                         has_production: bool = False) -> dg.SensorResult:
    """One tick. ``ingested``: the signature the instance last ingested; ``trained_at``: when models
    were trained (the production model's registration, the latest ``crystalnet_model``
    materialization; None where there is none). Reviews count from the latest of those and of
    this sensor's own last training request (in the cursor: a run may still be going)."""
    state = json.loads(cursor) if cursor else {}
    files = archive.annotation_files(raw_dir)
    signature = annotations_signature(files)
    if signature in (state.get("requested"), ingested):
        state["requested"] = signature
        return dg.SensorResult(cursor=json.dumps(state, sort_keys=True),
                               skip_reason=f"annotation files unchanged ({len(files)} files, signature {signature})")
    trained_request = state.get("train_requested_at")
    since = max(filter(None, [*trained_at, _utc(trained_request) if trained_request else None]), default=None)
    reviews = reviewed_wells_since(files, since)
    train = reviews >= min_reviews
    tags = {"annotations_signature": signature, "reviewed_wells_since_production": str(reviews)}
    request = dg.RunRequest(run_key=f"annotations:{signature}{':train' if train else ''}",
                            job_name=(refresh_labels_and_train_job if train else refresh_labels_job).name, tags=tags,
                            run_config=finetune_run_config(has_production) if train else {})
    state["requested"] = signature
    if train:
        state["train_requested_at"] = (now or datetime.now(timezone.utc)).isoformat()
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(state, sort_keys=True))


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dg.sensor(jobs=[refresh_labels_job, refresh_labels_and_train_job],
           minimum_interval_seconds=int(os.environ.get("CRYSTAL_SENSOR_INTERVAL_S") or 30),
           default_status=dg.DefaultSensorStatus.STOPPED,
           description=("Refreshes labels and tensors when annotation CSVs change (e.g. a reviewer's corrections); "
                        "retrains once enough reviewed wells arrived since the production model."))
def annotations_sensor(context: dg.SensorEvaluationContext, storage: StorageResource,
                       warehouse: WarehouseResource) -> dg.SensorResult:
    wh = warehouse.get()
    newest = model_table.production_model(wh)  # the latest registration, of either kind
    # A training request fine-tunes the production model of the kind it trains (fused when the
    # labelled drops have UV pictures, else visible); without one of that kind: from scratch.
    of_kind = model_table.production_model(wh, preparation.channels_trained(wh))
    result = evaluate_annotations(
        storage.layout.raw_dir, context.cursor, ingested=ingested_signature(context.instance),
        trained_at=[_as_datetime(newest["created_at"]) if newest else None,
                    last_trained_at(context.instance)],
        min_reviews=int(os.environ.get("CRYSTAL_FINETUNE_MIN_REVIEWS") or MIN_REVIEWS_DEFAULT),
        has_production=of_kind is not None)
    for request in result.run_requests or []:
        context.log.info(f"requesting {request.job_name}: {request.tags}")
    return result


def _as_datetime(value) -> datetime:
    """A warehouse TIMESTAMP (pandas or datetime, UTC without a zone) as an aware datetime."""
    value = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
