"""The code location: one Definitions object for the UI, the CLI and the tests.

`dagster asset materialize -m definitions`, `dagster dev` ([tool.dagster] in
pyproject.toml) and workspace.yaml all load this module.
"""

import dagster as dg

from assets import evaluate, ingest, plate_timeline, plates, prepare, train
from assets.annotations_sensor import annotations_sensor, refresh_labels_and_train_job, refresh_labels_job
from assets.plate_sensor import incoming_plates_sensor, label_plate_job
from assets.jobs import ingest_and_prepare_job, retrain_and_evaluate_job, weekly_retrain_schedule
from resources import build_resources

all_assets = dg.load_assets_from_modules([ingest, prepare, train, evaluate, plates, plate_timeline])
all_checks = dg.load_asset_checks_from_modules([ingest, prepare, train, evaluate, plates, plate_timeline])

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[ingest_and_prepare_job, retrain_and_evaluate_job, label_plate_job, refresh_labels_job,
          refresh_labels_and_train_job],
    sensors=[incoming_plates_sensor, annotations_sensor],
    schedules=[weekly_retrain_schedule],
    resources=build_resources(),
)
