"""Group ``plates``: one partition per plate imaging, found by a sensor, labelled and reported.

The sensor watches the incoming folder; ``label_plate_job`` ingests the plate's files
(same quarantine rules as the archive), labels every well with the production
CrystalNet, stores the predictions, and publishes a plate report.
"""

from typing import Optional

import dagster as dg
import pandas as pd

from assets.metadata import md, progress_logger, table_md
from assets.train import registered_model
from crystal_pipeline.evaluation import registry
from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest import incoming
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.warehouse import ImageScope
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import predictions as prediction_table
from crystal_pipeline.wells import missing_wells, slot_name
from resources import ComputeResource, StorageResource, WarehouseResource

plates_partitions = dg.DynamicPartitionsDefinition(name="plates")

# plate_images records the incoming folder's signature (incoming.folder_signature) it
# ingested; the sensor reads it back to never label an unchanged plate twice.
FOLDER_SIGNATURE = "folder_signature"


def _plate(context) -> tuple[str, str, Optional[str]]:
    key = context.partition_key
    plate_id, inspection = archive.split_plate_key(key)
    return key, plate_id, inspection


@dg.asset(group_name="plates", kinds={"duckdb"}, pool="duckdb", partitions_def=plates_partitions,
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
    fmt = _plate_format(rows)
    quarantined = rows[rows["status"] == "quarantined"]
    missing = _missing_wells(rows, fmt)
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


def _plate_format(rows: pd.DataFrame) -> Optional[int]:
    """The format ingest decided for the plate's ``images`` rows (None without a valid well)."""
    formats = rows["plate_format"].dropna()
    return int(formats.iloc[0]) if len(formats) else None


def _missing_wells(rows: pd.DataFrame, plate_format: Optional[int]) -> list[str]:
    """Missing wells and drops (``A01``, ``A01_2``) of the plate's ``images`` rows."""
    if not plate_format:
        return []
    drops = int(rows["plate_drops"].max()) if len(rows) and rows["plate_drops"].notna().any() else 1
    present = [slot_name(w, int(d)) for w, d, r in zip(rows["well"], rows["drop"].fillna(1), rows["row"])
               if pd.notna(r)]
    return missing_wells(present, plate_format, drops)


class PlatePredictionConfig(dg.Config):
    """Which model labels the plate (default: the production model) and the batch size."""

    model_version: Optional[str] = None
    batch_size: int = 128
    # Review budget in the plate report: the top N wells, or the fewest wells holding this share of the
    # plate's expected crystals (sum of calibrated crystal_prob). Unset: the top 5% of the plate (at least 8
    # wells; plates.report.DEFAULT_REVIEW_SHARE). The hits inside it are marked "review first".
    review_top_n: Optional[int] = None
    review_recall: Optional[float] = None


PREDICTION_CHECKS = [
    dg.AssetCheckSpec("every_well_accounted_for", asset="plate_predictions",
                      description="labelled + quarantined = files found, and + missing = the plate's format; "
                                  "fails with the list when any well is quarantined or missing"),
    dg.AssetCheckSpec("model_version_exists", asset="plate_predictions",
                      description="The model file that labelled the plate exists and its sha256 equals its "
                                  "models row's (not replaced or damaged since registration)."),
    dg.AssetCheckSpec("probabilities_sum_to_one", asset="plate_predictions"),
]


@dg.asset(group_name="plates", kinds={"pytorch", "duckdb"}, pool="duckdb", partitions_def=plates_partitions,
          deps=[plate_images], check_specs=PREDICTION_CHECKS)
def plate_predictions(context: dg.AssetExecutionContext, config: PlatePredictionConfig,
                      warehouse: WarehouseResource, compute: ComputeResource):
    """Every decodable well labelled by CrystalNet; the plate's earlier rows for that model replaced in one transaction."""
    from datetime import datetime, timezone

    from crystal_pipeline.ingest.image_files import well_files_from_images
    from crystal_pipeline.plates.labelling import label_plate
    from crystal_pipeline.model import load

    key, plate_id, inspection = _plate(context)
    wh = warehouse.get()
    model_row = registered_model(wh, config.model_version)
    model = load(model_row["path"], compute.device)  # a missing or unreadable file fails here, before any work
    rows = image_table.images_in(wh, ImageScope.of_plate(plate_id, inspection))
    labels = label_plate(well_files_from_images(rows), model, batch_size=config.batch_size,
                         progress=progress_logger(context, "labelled"))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    frame = pd.DataFrame(labels.prediction_rows(model_row["model_version"], now),
                         columns=list(prediction_table.PREDICTION_COLUMNS))
    prediction_table.replace_plate_predictions(wh, plate_id, inspection, model_row["model_version"], frame)
    checks = list(_prediction_checks(wh, rows, labels, model_row, plate_id, inspection))
    threshold = _threshold(model_row)
    hits = int((frame["crystal_prob"] >= threshold).sum()) if len(frame) else 0
    counts = frame["class_name"].value_counts().rename_axis("class").reset_index(name="wells") if len(frame) else frame
    yield dg.Output(metadata={
        "model_version": model_row["model_version"],
        "labelled": len(frame),
        "quarantined": len(labels.quarantined),
        "crystal_hits": hits,
        "crystal_threshold": round(threshold, 4),
        "images_per_s": round(labels.timings.images_per_s, 1),
        "seconds": round(labels.timings.total_s, 2),
        "inference_path": labels.timings.path,
        "class_counts": md(table_md(counts, 10)),
    }, value=labels)
    yield from checks


def _prediction_checks(wh, rows: pd.DataFrame, labels, model_row: dict, plate_id: str, inspection):
    """The three checks, computed from what was just written to the warehouse."""
    import numpy as np

    stored = prediction_table.plate_predictions(wh, plate_id, inspection, model_row["model_version"],
                                                columns=("image_id", "probs"))
    fmt = _plate_format(rows)
    missing = _missing_wells(rows, fmt)
    quarantined = [(q.image_id, q.reason) for q in labels.quarantined]
    accounted = len(stored) + len(quarantined) == len(rows)
    yield dg.AssetCheckResult(
        check_name="every_well_accounted_for", passed=accounted and not quarantined and not missing,
        metadata={"files": len(rows), "labelled": len(stored), "quarantined": len(quarantined),
                  "missing_wells": len(missing), "plate_format": fmt, "accounted": accounted,
                  "quarantined_list": md(table_md(pd.DataFrame(quarantined, columns=["image_id", "reason"]), 100)),
                  "missing_list": ", ".join(missing[:200])})
    problem = registry.artifact_problem(model_row)
    yield dg.AssetCheckResult(check_name="model_version_exists", passed=problem is None,
                              metadata={"model_version": model_row["model_version"], "path": str(model_row["path"]),
                                        "problem": problem or "none"})
    sums = np.array([np.sum(p) for p in stored["probs"]]) if len(stored) else np.ones(0)
    worst = float(np.abs(sums - 1).max()) if sums.size else 0.0
    yield dg.AssetCheckResult(check_name="probabilities_sum_to_one", passed=worst < 1e-3,
                              metadata={"max_abs_deviation": worst, "rows": int(sums.size)})


def _threshold(model_row: dict) -> float:
    """The hit threshold stored in the model's artifact (calibrated crystal_prob keeping 95% crystal
    recall on validation), as ``crystal-pipeline label`` reads it; for an artifact from before
    calibration, the registry's threshold, else 0.5."""
    from crystal_pipeline.model import ArtifactError, calibration_of, load_artifact

    try:
        meta = load_artifact(model_row["path"])
    except ArtifactError:  # the model_version_exists check reports the file; keep the registry's number
        meta = {}
    return calibration_of(meta, model_row.get("crystal_threshold"))[1]


@dg.asset(group_name="plates", kinds={"html"}, partitions_def=plates_partitions)
def plate_report(context: dg.AssetExecutionContext, config: PlatePredictionConfig, storage: StorageResource,
                 warehouse: WarehouseResource, plate_predictions) -> dg.MaterializeResult:
    """Plate map, ranked hit list and HTML page a crystallographer can act on."""
    from crystal_pipeline.plates.report import write_plate_report
    from crystal_pipeline.plates.timeline import load_timeline

    key, plate_id, inspection = _plate(context)
    layout = storage.layout
    wh = warehouse.get()
    model_row = registered_model(wh, config.model_version)
    fmt = image_table.plate_format(wh, plate_id, inspection)
    meta, conditions = archive.plate_metadata(layout.raw_dir, plate_id, incoming.plate_folder_path(layout.incoming_dir, key))
    threshold = _threshold(model_row)
    timeline = load_timeline(wh, plate_id, model_row["model_version"], threshold) if inspection else None
    report = write_plate_report(layout.plate_report_dir(key), key, int(fmt) if fmt else None, plate_predictions,
                                model_version=model_row["model_version"],
                                synthetic_model=model_row.get("trained_on") == "synthetic",
                                crystal_threshold=threshold, plate_meta=meta, conditions=conditions,
                                review_top_n=config.review_top_n, review_recall=config.review_recall,
                                timeline=timeline)
    context.log.info(f"plate report: {report.paths['html']}")
    top = pd.DataFrame([(h.well, h.class_name, round(h.crystal_prob, 3)) for h in report.hits[:10]],
                       columns=["well", "class", "crystal_prob"])
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(report.paths["html"])),
        "hit_list": dg.MetadataValue.path(str(report.paths["csv"])),
        "crystal_hits": len(report.hits),
        "review_first": len(report.review_first),
        "crystal_threshold": round(threshold, 4),
        "top_hits": md(table_md(top, 10)),
        "plate_map": md(report.markdown),
    })
