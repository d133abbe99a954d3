"""The incoming-plates sensor and the job it launches: one run per plate imaging, when it is ready."""

import json
import os

import dagster as dg

from assets.plate_timeline import plate_timeline
from assets.plates import FOLDER_SIGNATURE, plate_images, plate_predictions, plate_report, plates_partitions
from crystal_pipeline.ingest.incoming import decide, find_plates
from crystal_pipeline.service.k8s_pod import plate_run_tags
from crystal_pipeline.service.run_records import rerun_command
from resources import StorageResource

RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"

label_plate_job = dg.define_asset_job(
    "label_plate_job",
    selection=dg.AssetSelection.assets(plate_images, plate_predictions, plate_timeline, plate_report),
    description="Ingest one plate from the incoming folder, label every well, write its time course, "
                "publish the plate report.",
    # The steps run one after another: in the run worker's own process they skip a
    # process start (and a torch import) each, and a killed worker takes its step with it.
    executor_def=dg.in_process_executor,
    # Dagster's run retries (on in dagster.yaml and the serve profile) re-execute a failed
    # plate run from its failure, step failures included (a warehouse lock held past its
    # wait, a model file mid-promotion): a plate run is cheap and idempotent. Training
    # and the studies keep the instance default, no retry of a raised error.
    # With CRYSTAL_K8S_DATA_CLAIM (and the lake warehouse) each run also carries the
    # dagster-k8s/config tag: K8sRunLauncher makes it a pod on the shared data volume.
    tags={RETRY_ON_STEP_FAILURE_TAG: "true", **plate_run_tags()},
)


def labelled_signature(instance: dg.DagsterInstance, key: str) -> str | None:
    """The folder signature the plate's latest complete labelling ingested, from the instance's
    own records: ``plate_images``' latest materialization of ``key`` records it, and it counts
    only when a ``plate_report`` materialization of ``key`` came after it. Any run counts: the
    daemon's, ``scripts/label_new_plate.py``'s in-process one, or a launch from the UI."""
    def latest(asset) -> dg.EventLogRecord | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[key]), limit=1).records
        return records[0] if records else None

    images, report = latest(plate_images), latest(plate_report)
    if images is None or report is None or report.storage_id < images.storage_id:
        return None
    value = images.asset_materialization.metadata.get(FOLDER_SIGNATURE)
    return None if value is None else value.value


def failed_plate_run(instance: dg.DagsterInstance, key: str, signature: str) -> str | None:
    """Why the plate's files, as they are now, are not labelled: its latest run for this
    signature FAILED and Dagster's run retries will not retry it (the run's
    ``dagster/will_retry`` tag is not ``true``), with the commands that re-run it; None otherwise.

    The run retries re-execute a failed run as a new run carrying the same ``plate`` and
    ``plate_signature`` tags (and ``dagster/parent_run_id``), so the latest run is the last try.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"plate": key, "plate_signature": signature}), limit=1)
    if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
        return None
    run = runs[0]
    if run.tags.get("dagster/will_retry") == "true":
        return None
    tries = int(run.tags.get("dagster/retry_number", "0")) + 1
    return (f"run {run.run_id[:8]} FAILED after {tries} attempt(s); re-run: re-execute it in the UI, or "
            f"`{rerun_command(key)}`")


def evaluate_incoming(incoming_dir, cursor: str | None, has_partition, labelled=lambda key: None,
                      failed=lambda key, signature: None) -> dg.SensorResult:
    """One tick: which plates to register and run, and why others wait.

    The cursor remembers, per plate key, the folder signature seen on the last tick
    (a plate must be unchanged for one tick before it runs) and the signature last
    requested. ``labelled(key)`` gives the signature the plate was last labelled with
    (:func:`labelled_signature`), so a plate labelled by any run, before a restart or a
    fresh cursor, is not requested again while its files are unchanged. The run key
    carries the signature too, so Dagster itself also refuses a duplicate of its own runs.
    ``failed(key, signature)`` (:func:`failed_plate_run`) says why a requested plate's run
    failed past its retries: the skip message shows it instead of "already labelled".
    """
    state = json.loads(cursor) if cursor else {}
    seen, requested = state.get("seen", {}), state.get("requested", {})
    decision = decide(find_plates(incoming_dir), seen)
    runs, new_keys, failures = [], [], []
    for plate in decision.ready:
        if requested.get(plate.key) == plate.signature:
            why = failed(plate.key, plate.signature)
            if why:
                failures.append(f"{plate.key}: {why}")
            continue
        if labelled(plate.key) == plate.signature:
            requested[plate.key] = plate.signature  # remembered: the records are read once per signature
            continue
        if not has_partition(plate.key) and plate.key not in new_keys:
            new_keys.append(plate.key)
        runs.append(dg.RunRequest(run_key=f"{plate.key}:{plate.signature}", partition_key=plate.key,
                                  tags={"plate": plate.key, "plate_signature": plate.signature}))
        requested[plate.key] = plate.signature
    waiting = "; ".join([*failures, *(f"{k}: {why}" for k, why in sorted(decision.skipped.items()))])
    unchanged = len(decision.ready) - len(runs) - len(failures)
    if unchanged and not runs:
        waiting = "; ".join(filter(None, [f"{unchanged} plate(s) already labelled and unchanged", waiting]))
    new_cursor = json.dumps({"seen": decision.seen, "requested": requested}, sort_keys=True)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[plates_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=new_cursor,
        skip_reason=None if runs else (f"no plate ready. {waiting}" if waiting else "no plates in the incoming folder"),
    )


# CRYSTAL_SENSOR_INTERVAL_S: how often the daemon looks (the service tests use a few seconds).
@dg.sensor(job=label_plate_job, minimum_interval_seconds=int(os.environ.get("CRYSTAL_SENSOR_INTERVAL_S") or 30), default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers each complete, settled plate folder in the incoming folder and labels it.")
def incoming_plates_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    result = evaluate_incoming(storage.layout.incoming_dir, context.cursor,
                               lambda key: context.instance.has_dynamic_partition(plates_partitions.name, key),
                               lambda key: labelled_signature(context.instance, key),
                               lambda key, signature: failed_plate_run(context.instance, key, signature))
    if result.run_requests:
        context.log.info("requesting " + ", ".join(r.partition_key for r in result.run_requests))
    return result
