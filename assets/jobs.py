"""Jobs and schedules: named selections of the asset graph that people launch or automate."""

import dagster as dg

ingest_and_prepare_job = dg.define_asset_job(
    "ingest_and_prepare",
    selection=dg.AssetSelection.groups("ingest", "prepare"),
    description="Scan the raw archive, agree labels, and write the training tensors.",
)

retrain_and_evaluate_job = dg.define_asset_job(
    "retrain_and_evaluate",
    selection=dg.AssetSelection.groups("ingest", "prepare", "train")
    | dg.AssetSelection.assets("crystalnet_evaluation"),
    description=("Re-ingest new images and annotations, train a new CrystalNet and evaluate it. The new model "
                 "replaces the production one only if its validation accuracy and crystal recall are not worse."),
)

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=retrain_and_evaluate_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00, when the imagers are quiet
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retrain-and-evaluate; stopped by default (training config comes from the job's defaults).",
)
