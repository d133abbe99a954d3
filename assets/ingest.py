"""Group ``ingest``: imager files and expert annotations into the DuckDB warehouse."""


from typing import Literal

import dagster as dg
import pandas as pd

from assets.metadata import md, png_md, progress_logger, table_md
from crystal_pipeline.ingest import archive
from crystal_pipeline.reporting import figures
from crystal_pipeline.ingest.annotations import (DEFAULT_MAX_VOTE_LOSS_SHARE, AnnotationRefreshRefused,
                                                  refresh_annotations)
from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.ingest.consensus import ConsensusConfig
from crystal_pipeline.ingest.review_arrivals import annotations_signature
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.ingest.stored_consensus import store_consensus
from crystal_pipeline.ingest.splits import SIDES
from crystal_pipeline.warehouse import ImageScope
from crystal_pipeline.warehouse import annotations as annotation_table
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import labels as label_table
from resources import StorageResource, WarehouseResource


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb")
def raw_images(context: dg.AssetExecutionContext, storage: StorageResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One ``images`` row per image file under the raw archive, bad files quarantined with the reason."""
    raw_dir = storage.layout.raw_dir
    wh = warehouse.get()
    scope = ImageScope.of_source("archive")
    summary = ingest_files(wh, archive.iter_archive(raw_dir, storage.layout.naming), source="archive",
                           progress=progress_logger(context, "hashed and decoded"), scope=scope)
    context.log.info(f"{summary.found} image files under {raw_dir}")
    per_plate = image_table.plates_summary(wh, scope)
    quarantined = image_table.quarantined(wh, scope, with_path=True)
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
    bad = image_table.quarantined(warehouse.get())
    return dg.AssetCheckResult(passed=bad.empty, metadata={
        "quarantined": len(bad), "list": dg.MetadataValue.md(table_md(bad, 50))})


#: Metadata key: the content signature of the annotation CSVs read (the annotations sensor's memory).
ANNOTATIONS_SIGNATURE = "annotations_signature"


class AnnotationsConfig(dg.Config):
    """When a refresh may remove stored votes (by default it refuses a missing folder or losing most votes)."""

    max_vote_loss_share: float = DEFAULT_MAX_VOTE_LOSS_SHARE
    allow_vote_loss: bool = False


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb", deps=[raw_images])
def annotations(context: dg.AssetExecutionContext, config: AnnotationsConfig, storage: StorageResource,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Every expert annotation row; unusable rows go to ``annotation_errors`` with file, line and reason.

    Refuses, before writing, a refresh that finds the folder missing or unreadable or
    that would remove more than ``max_vote_loss_share`` of the stored votes.
    """
    wh = warehouse.get()
    raw_dir = storage.layout.raw_dir
    plates = image_table.plate_formats(wh)
    formats = {archive.plate_key(r.plate_id, None if pd.isna(r.inspection) else r.inspection):
               (None if pd.isna(r.plate_format) else int(r.plate_format)) for r in plates.itertuples()}
    files = archive.annotation_files(raw_dir)
    signature = annotations_signature(files)  # before reading: a file changed meanwhile runs again
    try:
        stored = refresh_annotations(wh, files, formats, folder=archive.annotations_dir(raw_dir),
                                     max_vote_loss_share=config.max_vote_loss_share,
                                     allow_vote_loss=config.allow_vote_loss)
    except AnnotationRefreshRefused as refused:
        raise dg.Failure(str(refused), allow_retries=False) from None
    context.log.info(f"{stored.votes} annotations from {len(files)} files, {stored.error_rows} error rows")
    return dg.MaterializeResult(metadata={
        ANNOTATIONS_SIGNATURE: signature,
        "csv_files": len(files),
        "annotations": stored.votes,
        "stored_votes_removed": stored.loss.lost,
        "annotators": stored.annotators,
        "images_annotated": stored.images_annotated,
        "images_without_annotation": stored.images - stored.images_annotated,
        "error_rows": stored.error_rows,
        "annotators_per_image": dg.MetadataValue.md(table_md(stored.per_image)),
        "errors": md(table_md(stored.reasons), table_md(stored.first_errors, 20, total=stored.error_rows)),
    })


@dg.asset_check(asset=annotations,
                description="No annotation row was unusable (errors are listed with file and line).")
def no_annotation_errors(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    errors = annotation_table.annotation_errors(warehouse.get())
    # A warning, not an error: the good rows are usable; the bad ones need a person.
    return dg.AssetCheckResult(passed=errors.empty, severity=dg.AssetCheckSeverity.WARN, metadata={
        "error_rows": len(errors), "list": dg.MetadataValue.md(table_md(errors, 50))})


class ConsensusRunConfig(dg.Config):
    """How annotators' votes become one label, and how images are split."""

    rule: Literal["unanimous", "majority"] = "unanimous"
    min_agreement: float = 0.5
    min_annotators: int = 1
    split_by: Literal["well", "plate", "image"] = "well"
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    # split_shares: within share_tolerance of the fractions from share_min_groups groups on (DESIGN.md: 1,000);
    # below, within share_sigmas binomial standard errors, and a miss only warns (tiny archives stray by chance).
    share_tolerance: float = 0.02
    share_min_groups: int = 1000
    share_sigmas: float = 3.0
    # A reviewer's correction (annotator review:<name>) replaces the original annotators' votes.
    review_overrides: bool = True


# Blocking: a failed split check stops image_tensors and everything after it in the run (the labels
# are stored, but nothing trains or evaluates on a leaking or skewed split).
CONSENSUS_CHECKS = [
    dg.AssetCheckSpec("split_shares", asset="consensus_labels", blocking=True,
                      description="The stored train, val and test shares are each within the run's tolerance "
                                  "of their configured fractions (below share_min_groups groups: a wider "
                                  "tolerance, and a miss only warns)."),
    dg.AssetCheckSpec("no_leak_across_sides", asset="consensus_labels", blocking=True,
                      description="No stored group of the configured kind (a well, by default, read from the "
                                  "images table's plate_id and well) and no file hash (sha256) has images on "
                                  "two sides of the split."),
]


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="duckdb", deps=[annotations], check_specs=CONSENSUS_CHECKS)
def consensus_labels(context: dg.AssetExecutionContext, config: ConsensusRunConfig,
                     warehouse: WarehouseResource):
    """One agreed class per image (unanimous by default) and its stable train/val/test side (by well).

    The split checks run in the asset body because they depend on this run's config
    (the split mode and tolerance); they read the table back as stored.
    """
    from crystal_pipeline.ingest.quality import split_checks  # library: pure functions over the labels

    wh = warehouse.get()
    cfg = ConsensusConfig(rule=config.rule, min_agreement=config.min_agreement,
                          min_annotators=config.min_annotators, split_by=config.split_by,
                          train_fraction=config.train_fraction, val_fraction=config.val_fraction,
                          test_fraction=config.test_fraction, seed=config.seed)
    stored = store_consensus(wh, cfg, review_overrides=config.review_overrides)
    result, reviews = stored.result, stored.reviews
    distribution = _class_distribution(stored.counts)
    chart = figures.bar_chart(
        {split: dict(zip(distribution["class"], distribution[split])) for split in SIDES},
        f"consensus labels by class ({config.rule})", log=True)
    excluded = pd.DataFrame(result.excluded.most_common(), columns=["reason", "images"])
    excluded["examples"] = [", ".join(result.examples[r]) for r in excluded["reason"]]
    unmapped = pd.DataFrame(result.unmapped_sets.most_common(), columns=["attribute set", "images"])
    agreement = stored.agreement
    agreement_chart = figures.bar_chart(
        {"images": {f"{a}/{n}": int(c) for (n, a), c in sorted(agreement.items())}},
        "annotators agreeing with the most common attribute set", xlabel="agreeing / annotators")
    context.log.info(f"{stored.labelled} labelled of {stored.annotated_images} annotated images")
    yield dg.MaterializeResult(metadata={
        "labelled_images": stored.labelled,
        "annotated_images": stored.annotated_images,
        "rule": config.rule,
        "split_by": config.split_by,
        **{side: int(distribution[side].sum()) for side in SIDES},
        "class_distribution": md(table_md(distribution, 12), png_md(chart, "class distribution")),
        "excluded": md(table_md(excluded), "**Attribute sets with no class**", table_md(unmapped)),
        "agreement": md(table_md(pd.DataFrame(
            [(n, a, c) for (n, a), c in sorted(agreement.items())],
            columns=["annotators", "agreeing", "images"])), png_md(agreement_chart, "agreement histogram")),
        **reviews.as_metadata(),
        "reviews": md(reviews.markdown()),
    })
    for outcome in split_checks(label_table.stored_labels_with_images(wh), cfg.split,
                                tolerance=config.share_tolerance, min_groups=config.share_min_groups,
                                sigmas=config.share_sigmas):
        yield _check_result(outcome)


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("unique_image_ids", asset="consensus_labels", blocking=True,
                             description="In the stored table, every label names exactly one decodable images "
                                         "row, and no two labels name the same file or the same well and drop "
                                         "of one plate imaging."),
           dg.AssetCheckSpec("class_ids_in_range", asset="consensus_labels", blocking=True,
                             description="In the stored table, every class id is 1..10 and its class_name and "
                                         "has_crystal are that class's.")])
def stored_label_checks(warehouse: WarehouseResource):
    """The label table's own rules, re-read from the warehouse (re-runnable alone); blocking, so
    image_tensors waits for them and does not run when one fails."""
    from crystal_pipeline.ingest.quality import label_table_checks

    for outcome in label_table_checks(label_table.stored_labels_with_images(warehouse.get())):
        yield _check_result(outcome, asset_key="consensus_labels")


def _check_result(outcome, **where) -> dg.AssetCheckResult:
    """A library CheckOutcome as Dagster's result: ERROR severity (blocking where the spec is) unless warn_only."""
    severity = dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(check_name=outcome.name, passed=outcome.passed, severity=severity,
                               metadata={k: _meta(v) for k, v in outcome.metadata.items()}, **where)


def _meta(value):
    return dg.MetadataValue.md(value) if isinstance(value, str) and "\n" in value else value


def _class_distribution(counts: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 'Total' column, per side of the split, from the stored labels per
    ``class_id, split`` (column ``labels``)."""
    per_side = {(int(c), str(s)): int(n) for c, s, n in counts[["class_id", "split", "labels"]].itertuples(index=False)}
    rows = []
    for class_id, name in enumerate(CLASS_NAMES, start=1):
        sides = [per_side.get((class_id, side), 0) for side in SIDES]
        rows.append((class_id, name, *sides, sum(sides)))
    frame = pd.DataFrame(rows, columns=["id", "class", *SIDES, "total"])
    total = max(1, int(frame["total"].sum()))
    frame["share"] = (frame["total"] / total).map(lambda s: f"{100 * s:.1f}%")
    return frame
