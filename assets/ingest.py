"""Group ``ingest``: imager files and expert annotations into the DuckDB warehouse."""


from collections import Counter
from typing import Literal

import dagster as dg
import pandas as pd

from assets.metadata import md, png_md, progress_logger, table_md
from crystal_pipeline.ingest import archive
from crystal_pipeline.reporting import figures
from crystal_pipeline.ingest.annotations import read_annotations
from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.ingest.consensus import ConsensusConfig, agree, agreement_histogram
from crystal_pipeline.ingest.image_files import ingest_files
from resources import StorageResource, WarehouseResource


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb")
def raw_images(context: dg.AssetExecutionContext, storage: StorageResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One ``images`` row per image file under the raw archive, bad files quarantined with the reason."""
    raw_dir = storage.layout.raw_dir
    files = archive.scan_archive(raw_dir)
    context.log.info(f"{len(files)} image files under {raw_dir}")
    wh = warehouse.get()
    summary = ingest_files(wh, files, source="archive", progress=progress_logger(context, "hashed and decoded"),
                           scope_sql="source = 'archive'")
    per_plate = wh.query_df(
        "SELECT plate_id, inspection, any_value(plate_format) AS format, count(*) AS images, "
        "count(*) FILTER (status = 'quarantined') AS quarantined FROM images WHERE source = 'archive' "
        "GROUP BY ALL ORDER BY plate_id, inspection"
    )
    quarantined = wh.query_df(
        "SELECT image_id, error, path FROM images WHERE source = 'archive' AND status = 'quarantined' "
        "ORDER BY image_id"
    )
    return dg.MaterializeResult(metadata={
        "raw_dir": dg.MetadataValue.path(str(raw_dir)),
        "files_found": summary.found,
        "new": summary.new,
        "changed": summary.changed,
        "unchanged": summary.unchanged,
        "quarantined_total": len(quarantined),
        "vanished_from_disk": len(summary.vanished),
        "plates": dg.MetadataValue.md(table_md(per_plate, 50)),
        "quarantine": md(f"**{len(quarantined)} quarantined**", table_md(quarantined)),
        "seconds": round(summary.seconds, 2),
    })


@dg.asset_check(asset=raw_images, description="Every image decodes; quarantined files are listed with the reason.")
def no_quarantined_images(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    bad = warehouse.get().query_df(
        "SELECT image_id, error FROM images WHERE status = 'quarantined' ORDER BY image_id")
    return dg.AssetCheckResult(passed=bad.empty, metadata={
        "quarantined": len(bad), "list": dg.MetadataValue.md(table_md(bad, 50))})


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb", deps=[raw_images])
def annotations(context: dg.AssetExecutionContext, storage: StorageResource,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Every expert annotation row; unusable rows go to ``annotation_errors`` with file, line and reason."""
    wh = warehouse.get()
    raw_dir = storage.layout.raw_dir
    plates = wh.query_df("SELECT DISTINCT plate_id, inspection, plate_format FROM images")
    formats = {archive.plate_key(r.plate_id, None if pd.isna(r.inspection) else r.inspection):
               (None if pd.isna(r.plate_format) else int(r.plate_format)) for r in plates.itertuples()}
    known = set(wh.query_df("SELECT image_id FROM images")["image_id"])
    files = archive.annotation_files(raw_dir)
    table = read_annotations(files, formats, known)
    rows = pd.DataFrame([(a.image_id, list(a.attributes), a.annotator, a.source_file, a.source_line)
                         for a in table.annotations],
                        columns=["image_id", "attributes", "annotator", "source_file", "source_line"])
    errors = pd.DataFrame([(e.source_file, e.source_line, e.reason, e.raw) for e in table.errors],
                          columns=["source_file", "source_line", "reason", "raw"])
    with wh.transaction() as con:
        con.execute("DELETE FROM annotations")
        con.execute("DELETE FROM annotation_errors")
        if len(rows):
            con.register("new_annotations", rows)
            con.execute("INSERT INTO annotations (image_id, annotator, attributes, source_file, source_line) "
                        "SELECT image_id, annotator, attributes, source_file, source_line FROM new_annotations")
        if len(errors):
            con.register("new_errors", errors)
            con.execute("INSERT INTO annotation_errors SELECT source_file, source_line, reason, raw FROM new_errors")
    per_image = rows.groupby("image_id").size() if len(rows) else pd.Series(dtype=int)
    reasons = Counter(e.reason.split(":")[0] for e in table.errors)
    context.log.info(f"{len(rows)} annotations from {len(files)} files, {len(errors)} error rows")
    return dg.MaterializeResult(metadata={
        "csv_files": len(files),
        "annotations": len(rows),
        "annotators": int(rows["annotator"].nunique()) if len(rows) else 0,
        "images_annotated": len(per_image),
        "images_without_annotation": len(known) - len(per_image),
        "error_rows": len(errors),
        "annotators_per_image": dg.MetadataValue.md(table_md(
            per_image.value_counts().sort_index().rename_axis("annotators").reset_index(name="images"))),
        "errors": md(table_md(pd.DataFrame(reasons.most_common(), columns=["reason", "rows"])),
                     table_md(errors, 20)),
    })


@dg.asset_check(asset=annotations,
                description="No annotation row was unusable (errors are listed with file and line).")
def no_annotation_errors(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    errors = warehouse.get().query_df("SELECT * FROM annotation_errors ORDER BY source_file, source_line")
    # A warning, not an error: the good rows are usable; the bad ones need a person.
    return dg.AssetCheckResult(passed=errors.empty, severity=dg.AssetCheckSeverity.WARN, metadata={
        "error_rows": len(errors), "list": dg.MetadataValue.md(table_md(errors, 50))})


class ConsensusRunConfig(dg.Config):
    """How annotators' votes become one label, and how images are split."""

    rule: Literal["unanimous", "majority"] = "unanimous"
    min_agreement: float = 0.5
    min_annotators: int = 1
    val_fraction: float = 0.2
    split_by: Literal["image", "plate"] = "image"
    seed: int = 0
    val_share_tolerance: float = 0.02


CONSENSUS_CHECKS = [
    dg.AssetCheckSpec("unique_image_ids", asset="consensus_labels"),
    dg.AssetCheckSpec("class_ids_in_range", asset="consensus_labels"),
    dg.AssetCheckSpec("validation_share", asset="consensus_labels"),
    dg.AssetCheckSpec("no_plate_on_both_sides", asset="consensus_labels"),
]


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb", deps=[annotations], check_specs=CONSENSUS_CHECKS)
def consensus_labels(context: dg.AssetExecutionContext, config: ConsensusRunConfig,
                     warehouse: WarehouseResource):
    """One agreed class per image (unanimous by default) and its stable train/val split.

    Its checks run in the asset body because two of them depend on this run's config
    (the split mode and tolerance).
    """
    from crystal_pipeline.ingest.quality import split_checks  # library: pure functions over the labels

    wh = warehouse.get()
    votes = wh.query_df("SELECT image_id, attributes FROM annotations")
    status = dict(wh.query_df("SELECT image_id, status FROM images").itertuples(index=False))
    cfg = ConsensusConfig(rule=config.rule, min_agreement=config.min_agreement,
                          min_annotators=config.min_annotators, val_fraction=config.val_fraction,
                          split_by=config.split_by, seed=config.seed)
    result = agree(((r.image_id, tuple(r.attributes)) for r in votes.itertuples(index=False)), cfg, status)
    labels = pd.DataFrame([vars(l) for l in result.labels],
                          columns=["image_id", "class_id", "class_name", "has_crystal", "n_annotators",
                                   "agreement", "split"])
    with wh.transaction() as con:
        con.execute("DELETE FROM consensus_labels")
        if len(labels):
            con.register("new_labels", labels)
            con.execute("INSERT INTO consensus_labels SELECT image_id, class_id, class_name, has_crystal, "
                        "n_annotators, agreement, split FROM new_labels")
    distribution = _class_distribution(labels)
    chart = figures.bar_chart(
        {split: dict(zip(distribution["class"], distribution[split])) for split in ("train", "val")},
        f"consensus labels by class ({config.rule})", log=True)
    excluded = pd.DataFrame(result.excluded.most_common(), columns=["reason", "images"])
    excluded["examples"] = [", ".join(result.examples[r]) for r in excluded["reason"]]
    unmapped = pd.DataFrame(result.unmapped_sets.most_common(), columns=["attribute set", "images"])
    agreement = agreement_histogram((r.image_id, tuple(r.attributes)) for r in votes.itertuples(index=False))
    agreement_chart = figures.bar_chart(
        {"images": {f"{a}/{n}": int(c) for (n, a), c in sorted(agreement.items())}},
        "annotators agreeing with the most common attribute set", xlabel="agreeing / annotators")
    context.log.info(f"{len(labels)} labelled of {votes['image_id'].nunique()} annotated images")
    yield dg.MaterializeResult(metadata={
        "labelled_images": len(labels),
        "annotated_images": int(votes["image_id"].nunique()),
        "rule": config.rule,
        "split_by": config.split_by,
        "train": int((labels["split"] == "train").sum()),
        "val": int((labels["split"] == "val").sum()),
        "class_distribution": md(table_md(distribution, 12), png_md(chart, "class distribution")),
        "excluded": md(table_md(excluded), "**Attribute sets with no class**", table_md(unmapped)),
        "agreement": md(table_md(pd.DataFrame(
            [(n, a, c) for (n, a), c in sorted(agreement.items())],
            columns=["annotators", "agreeing", "images"])), png_md(agreement_chart, "agreement histogram")),
    })
    for outcome in split_checks(labels, split_by=config.split_by, val_fraction=config.val_fraction,
                                tolerance=config.val_share_tolerance):
        yield dg.AssetCheckResult(check_name=outcome.name, passed=outcome.passed,
                                  metadata={k: _meta(v) for k, v in outcome.metadata.items()})


def _meta(value):
    return dg.MetadataValue.md(value) if isinstance(value, str) and "\n" in value else value


def _class_distribution(labels: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 'Total' column, per split."""
    counts = labels.groupby(["class_id", "split"]).size().unstack(fill_value=0) if len(labels) else pd.DataFrame()
    rows = []
    for class_id, name in enumerate(CLASS_NAMES, start=1):
        train = int(counts.loc[class_id, "train"]) if class_id in counts.index and "train" in counts else 0
        val = int(counts.loc[class_id, "val"]) if class_id in counts.index and "val" in counts else 0
        rows.append((class_id, name, train, val, train + val))
    frame = pd.DataFrame(rows, columns=["id", "class", "train", "val", "total"])
    total = max(1, int(frame["total"].sum()))
    frame["share"] = (frame["total"] / total).map(lambda s: f"{100 * s:.1f}%")
    return frame
