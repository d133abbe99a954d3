"""Group ``plates``: one partition per plate imaging, found by a sensor, labelled and reported.

The sensor watches the incoming folder; ``label_plate_job`` ingests the plate's files
(same quarantine rules as the archive), labels every well with the production
CrystalNet, stores the predictions, and publishes a plate report.

One model per plate run: ``plate_predictions`` resolves the model once (config
``model_version``, else ``plates.model_choice``: the production fused model for a plate with
UV pictures, the production visible one otherwise; on a UV plate the visible model labels it
too, as a second opinion stored under its own version) and its value, a :class:`PlateRun`, names it to
``plate_timeline`` and ``plate_report``, which read that version's ``predictions`` rows.
``plate_predictions`` is two ops: inference (pool ``gpu`` on a machine with an NVIDIA
device, none on CPU) and the warehouse write (pool ``duckdb``; ``plate_writes`` with the lake
warehouse, where plates write at once), so labelling a plate never holds the warehouse's
single-writer slot while the model runs.
"""

from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd

from assets.metadata import md, progress_logger, table_md
from crystal_pipeline.evaluation import registry
from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest import incoming
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.layout import default_warehouse_backend
from crystal_pipeline.plates import plate_run
from crystal_pipeline.plates.plate_run import PlateRun
from crystal_pipeline.warehouse import ImageScope
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import predictions as prediction_table
from resources import ComputeResource, StorageResource, WarehouseResource

plates_partitions = dg.DynamicPartitionsDefinition(name="plates")

# plate_images records the incoming folder's signature (incoming.folder_signature) it
# ingested; the sensor reads it back to never label an unchanged plate twice.
FOLDER_SIGNATURE = "folder_signature"


def _plate(context) -> tuple[str, str, Optional[str]]:
    key = context.partition_key
    plate_id, inspection = archive.split_plate_key(key)
    return key, plate_id, inspection


def _plate_write_pool() -> str:
    """The pool of a plate run's warehouse steps: ``duckdb`` (a DuckDB file has one writer),
    or with the lake warehouse ``plate_writes``, whose limit is the service's plate-run limit:
    lake writers commit at once, each plate in one transaction, while ingest and consensus
    keep ``duckdb`` (crystal_pipeline.service.instance)."""
    return "plate_writes" if default_warehouse_backend() == "ducklake" else "duckdb"


@dg.asset(group_name="plates", kinds={"duckdb"}, pool=_plate_write_pool(), partitions_def=plates_partitions,
          check_specs=[dg.AssetCheckSpec("plate_files_decodable", asset="plate_images",
                                         description="Every file of the plate decodes (quarantined ones listed).")])
def plate_images(context: dg.AssetExecutionContext, storage: StorageResource,
                 warehouse: WarehouseResource):
    """The plate's rows in ``images`` (source ``incoming``); bad files quarantined with the reason."""
    key, plate_id, inspection = _plate(context)
    folder = incoming.plate_folder_path(storage.layout.incoming_dir, key)
    if not folder.is_dir():
        raise dg.Failure(f"plate folder {folder} does not exist (partition {key})")
    signature = incoming.folder_signature(folder)  # before reading: a later change gets a new run
    naming = storage.layout.naming
    files = archive.scan_plate(folder, plate_id, inspection, naming) if inspection else [
        f for f in archive.scan_plate(folder, plate_id, naming=naming) if f.inspection is None]
    wh = warehouse.get()
    scope = ImageScope.of_plate(plate_id, inspection)
    summary = ingest_files(wh, files, source="incoming", scope=scope,
                           progress=progress_logger(context, "hashed and decoded"))
    rows = image_table.images_in(wh, scope, ("image_id", "well", "drop", "plate_drops", "row", "status", "error",
                                             "plate_format"))
    fmt = plate_run.plate_format_of(rows)
    quarantined = rows[rows["status"] == "quarantined"]
    missing = plate_run.missing_of(rows, fmt)
    yield dg.AssetCheckResult(check_name="plate_files_decodable", passed=quarantined.empty, metadata={
        "quarantined": len(quarantined), "list": md(table_md(quarantined[["image_id", "error"]], 100))})
    yield dg.MaterializeResult(metadata={
        "folder": dg.MetadataValue.path(str(folder)),
        FOLDER_SIGNATURE: signature,
        "plate_format": fmt,
        "files_found": summary.found,
        "new_or_changed": summary.new + summary.changed,
        "quarantined": len(quarantined),
        "missing_wells": len(missing),
        "quarantine": md(table_md(quarantined[["image_id", "error"]])),
        "missing": ", ".join(missing[:100]) + (" ..." if len(missing) > 100 else ""),
    })


class PlatePredictionConfig(dg.Config):
    """Which model labels the plate (default: the production model), the batch size, and the
    arithmetic: ``auto`` (bf16 where the CPU has AMX/AVX512-BF16 or on CUDA, else fp32), ``fp32``
    or ``bf16`` (crystal_pipeline.model.precision; the same setting as ``label --precision``)."""

    model_version: Optional[str] = None
    batch_size: int = 128
    precision: str = "auto"


class PlateReportConfig(dg.Config):
    """Review budget in the plate report: the top N wells, or the fewest wells holding this share of the
    plate's expected crystals (sum of calibrated crystal_prob). Unset: the top 5% of the plate (at least 8
    wells; plates.report.DEFAULT_REVIEW_SHARE). The hits inside it are marked "review first"."""

    review_top_n: Optional[int] = None
    review_recall: Optional[float] = None


PREDICTION_CHECKS = [
    dg.AssetCheckSpec("every_well_accounted_for", asset="plate_predictions", blocking=True,
                      description="Re-derived from the warehouse after the write: every images row of the plate is "
                                  "exactly one of labelled (a predictions row of the run's model) or quarantined. "
                                  "Blocking: a report of a labelling that lost wells is not published."),
    dg.AssetCheckSpec("no_missing_or_quarantined_wells", asset="plate_predictions",
                      description="No well is quarantined or missing from the plate's format; lists them when "
                                  "some are. Not blocking: the report lists those wells."),
    dg.AssetCheckSpec("probabilities_sum_to_one", asset="plate_predictions", blocking=True,
                      description="Every stored prediction's 10 probabilities sum to 1."),
]


def _inference_pool() -> Optional[str]:
    """``gpu`` where the definitions load on a machine with an NVIDIA device (the pool training
    holds, so plate inference and training take turns on the GPUs), else no pool: on a CPU box
    labelling a plate must not queue behind a training run. Decided without importing torch."""
    return "gpu" if Path("/dev/nvidiactl").exists() else None


@dg.op(pool=_inference_pool(), ins={"plate_images": dg.In(dg.Nothing)})
def label_plate_wells(context: dg.OpExecutionContext, config: PlatePredictionConfig,
                      warehouse: WarehouseResource, compute: ComputeResource):
    """Resolve the model once, check its file against its row (sha256) before loading it, and label
    every decodable well; nothing is written (a damaged model fails here, and no row changes)."""
    from crystal_pipeline.ingest.image_files import well_files_from_images
    from crystal_pipeline.plates.labelling import label_plate
    from crystal_pipeline.plates.fused_labelling import model_mismatch
    from crystal_pipeline.plates.model_choice import choose_models, label_second_opinion, plate_has_uv

    key, plate_id, inspection = _plate(context)
    wh = warehouse.get()
    # With the UV rows: a fused model reads each drop's UV picture; label_plate counts only visible ones.
    rows = image_table.images_in(wh, ImageScope.of_plate(plate_id, inspection), with_uv=True)
    files = well_files_from_images(rows)
    try:  # a UV plate gets the fused production model, a plate without UV the visible one
        choice = choose_models(wh, plate_has_uv(files), config.model_version)
    except LookupError as error:
        raise dg.Failure(f"{error}; plate {key} was not labelled") from error
    model_row = choice.record
    try:
        model = registry.load_registered(model_row, compute.device)
    except registry.ModelIntegrityError as error:
        raise dg.Failure(f"{error}: re-register or retrain the model; plate {key} was not labelled") from error
    mismatch = model_mismatch(model, files, model_row["model_version"])
    if mismatch is not None:
        raise dg.Failure(f"{mismatch}; plate {key} was not labelled")
    try:
        labels = label_plate(files, model, batch_size=config.batch_size,
                             progress=progress_logger(context, "labelled"), precision=config.precision,
                             locate_threshold=plate_run.hit_threshold(model_row, model.artifact_meta))
    except ValueError as error:  # an unknown precision, or one the model's engine cannot run
        raise dg.Failure(f"{error}; plate {key} was not labelled") from error
    t = labels.timings
    context.log.info(f"plate {key}: labelled with {model_row['model_version']} ({t.engine}, {t.precision}: "
                     f"{t.precision_reason}). {choice.reason}")
    second, second_labels = None, None
    if choice.second is not None:  # the visible model's call beside the fused one's; never required
        second, second_labels, problem = label_second_opinion(choice.second, files, rows, device=compute.device,
                                                              batch_size=config.batch_size, precision=config.precision)
        if problem:
            context.log.warning(problem)
    run = plate_run.plate_run_of(model_row, model, labels, rows, choice.reason, second)
    return run, labels, second_labels


@dg.op(pool=_plate_write_pool(), out={"result": dg.Out(), **{f"plate_predictions_{c.name}": dg.Out(is_required=False)
                                                  for c in PREDICTION_CHECKS}})
def write_plate_predictions(context: dg.OpExecutionContext, warehouse: WarehouseResource, labelled):
    """The plate's rows for the run's model replaced in one transaction, then the checks from the warehouse."""
    from datetime import datetime, timezone

    run, labels, second_labels = labelled
    key, plate_id, inspection = _plate(context)
    wh = warehouse.get()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    frame = pd.DataFrame(labels.prediction_rows(run.model_version, now),
                         columns=list(prediction_table.PREDICTION_COLUMNS))
    prediction_table.replace_plate_predictions(wh, plate_id, inspection, run.model_version, frame)
    if run.second is not None:  # the second opinion's rows, under its own version
        prediction_table.replace_plate_predictions(wh, plate_id, inspection, run.second.model_version, pd.DataFrame(
            second_labels.prediction_rows(run.second.model_version, now),
            columns=list(prediction_table.PREDICTION_COLUMNS)))
    found = plate_run.prediction_checks(wh, plate_id, inspection, run)
    hits = int((frame["crystal_prob"] >= run.crystal_threshold).sum()) if len(frame) else 0
    counts = frame["class_name"].value_counts().rename_axis("class").reset_index(name="wells") if len(frame) else frame
    yield dg.Output(run, "result", metadata={
        "model_version": run.model_version,
        "model_reason": run.reason,
        "second_opinion": run.second.model_version if run.second is not None else "",
        "labelled": len(frame),
        "quarantined": len(found.quarantined),
        "crystal_hits": hits,
        "crystal_threshold": round(run.crystal_threshold, 4),
        "images_per_s": round(labels.timings.images_per_s, 1),
        "seconds": round(labels.timings.total_s, 2),
        "inference_path": labels.timings.path,
        "engine": labels.timings.engine,
        "precision": labels.timings.precision,
        "precision_reason": labels.timings.precision_reason,
        "class_counts": md(table_md(counts, 10)),
    })
    yield from _check_results(found)


def _check_results(found: plate_run.PredictionChecks):
    """The library's findings as Dagster check results."""
    quarantined = md(table_md(pd.DataFrame(found.quarantined, columns=["image_id", "reason"]), 100))
    counts = {"files": found.files, "labelled": found.labelled, "quarantined": len(found.quarantined),
              "missing_wells": len(found.missing), "plate_format": found.plate_format}
    yield dg.AssetCheckResult(asset_key="plate_predictions", check_name="every_well_accounted_for",
                              passed=found.accounted,
                              metadata={**counts, "accounted": found.accounted,
                                        "unaccounted": ", ".join(found.unaccounted[:100]) or "none",
                                        "quarantined_list": quarantined,
                                        "missing_list": ", ".join(found.missing[:200])})
    yield dg.AssetCheckResult(asset_key="plate_predictions", check_name="no_missing_or_quarantined_wells",
                              passed=found.complete,
                              metadata={**counts, "quarantined_list": quarantined,
                                        "missing_list": ", ".join(found.missing[:200])})
    yield dg.AssetCheckResult(asset_key="plate_predictions", check_name="probabilities_sum_to_one",
                              passed=found.max_abs_deviation < 1e-3,
                              metadata={"max_abs_deviation": found.max_abs_deviation, "rows": found.labelled})


@dg.graph_asset(group_name="plates", kinds={"pytorch", "duckdb"}, partitions_def=plates_partitions,
                ins={"plate_images": dg.AssetIn(dagster_type=dg.Nothing)}, check_specs=PREDICTION_CHECKS,
                config=dg.ConfigMapping(config_fn=lambda c: {"label_plate_wells": {"config": c}},
                                        config_schema=PlatePredictionConfig.to_config_schema()))
def plate_predictions(plate_images):
    """Every decodable well labelled by CrystalNet (one model, resolved once for the whole plate run);
    the plate's earlier rows for that model replaced in one transaction. Its value names the model
    (a PlateRun) to plate_timeline and plate_report."""
    outputs = write_plate_predictions(label_plate_wells(plate_images))
    return {"result": outputs[0], **{f"plate_predictions_{c.name}": o for c, o in zip(PREDICTION_CHECKS, outputs[1:])}}


@dg.asset(group_name="plates", kinds={"html"}, partitions_def=plates_partitions)
def plate_report(context: dg.AssetExecutionContext, config: PlateReportConfig, storage: StorageResource,
                 warehouse: WarehouseResource, plate_predictions: PlateRun) -> dg.MaterializeResult:
    """Plate map, ranked hit list and HTML page a crystallographer can act on, from the ``predictions``
    rows of the model plate_predictions used (its name and threshold, not today's production model's)."""
    from crystal_pipeline.plates.report import write_plate_report
    from crystal_pipeline.plates import second_opinion as opinion
    from crystal_pipeline.plates.second_opinion import SecondOpinion
    from crystal_pipeline.plates.timeline import load_timeline

    key, plate_id, inspection = _plate(context)
    layout = storage.layout
    wh = warehouse.get()
    run = plate_predictions
    labels = plate_run.stored_labels(wh, plate_id, inspection, run)
    second = None if run.second is None else SecondOpinion(  # the visible model's call on a UV plate
        run.second.model_version, plate_run.stored_labels(wh, plate_id, inspection, run.second),
        run.second.crystal_threshold)
    fmt = image_table.plate_format(wh, plate_id, inspection)
    meta, conditions = archive.plate_metadata(layout.raw_dir, plate_id, incoming.plate_folder_path(layout.incoming_dir, key))
    timeline = load_timeline(wh, plate_id, run.model_version, run.crystal_threshold) if inspection else None
    report = write_plate_report(layout.plate_report_dir(key), key, int(fmt) if fmt else None, labels,
                                model_version=run.model_version, synthetic_model=run.synthetic_model,
                                crystal_threshold=run.crystal_threshold, plate_meta=meta, conditions=conditions,
                                review_top_n=config.review_top_n, review_recall=config.review_recall,
                                timeline=timeline, model_reason=run.reason, second_opinion=second)
    context.log.info(f"plate report: {report.paths['html']}")
    top = pd.DataFrame([(h.well, h.class_name, round(h.crystal_prob, 3)) for h in report.hits[:10]],
                       columns=["well", "class", "crystal_prob"])
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(report.paths["html"])),
        "hit_list": dg.MetadataValue.path(str(report.paths["csv"])),
        "model_version": run.model_version,
        "model_reason": run.reason,
        **({"second_opinion": run.second.model_version,
            "calls_differ": len(report.calls_differ or [])}
           if second is not None else {}),
        **({"plate_map_visible": md(opinion.map_markdown(report.map_visible_png, report.calls_differ))}
           if report.map_visible_png is not None else {}),
        "crystal_hits": len(report.hits),
        "review_first": len(report.review_first),
        "crystal_threshold": round(run.crystal_threshold, 4),
        "engine": run.timings.engine,
        "precision": run.timings.precision,
        "top_hits": md(table_md(top, 10)),
        "plate_map": md(report.markdown),
    })
