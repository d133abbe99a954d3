"""Group ``prepare``: consensus-labelled images as preprocessed Parquet tensors and their statistics."""


import dagster as dg
import numpy as np
import pandas as pd

from assets.ingest import consensus_labels
from assets.metadata import md, png_md, progress_logger, table_md
from crystal_pipeline.reporting import figures
from crystal_pipeline.tensors import preparation
from crystal_pipeline import tensors
from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.tensors.preparation import SPLITS
from crystal_pipeline.tensors.verify import check_stats, read_back_split
from resources import PreprocessingResource, StorageResource, WarehouseResource


@dg.asset(group_name="prepare", kinds={"parquet"}, deps=[consensus_labels])
def image_tensors(context: dg.AssetExecutionContext, storage: StorageResource, warehouse: WarehouseResource,
                  preprocessing: PreprocessingResource) -> dg.MaterializeResult:
    """Central square (or, with ``preprocessing.crop: drop``, a square around the located drop), anti-aliased resize, 8-bit grey, one Parquet folder per split (streamed)."""
    layout = storage.layout
    resolution = preprocessing.resolution
    context.log.info(f"preprocessing the labelled images to {resolution} px")
    summary = preparation.write_split_tensors(warehouse.get(), layout, resolution, workers=preprocessing.workers,
                                              progress=progress_logger(context, "preprocessed"),
                                              crop=preprocessing.crop)
    failures = pd.DataFrame(summary.failures, columns=["image_id", "reason"])
    preview = _preview(layout.tensors_split_dir(resolution, "train"), resolution)
    return dg.MaterializeResult(metadata={
        "resolution": resolution,
        "crop": preprocessing.crop,
        "path": dg.MetadataValue.path(str(layout.tensors_dir(resolution))),
        **{f"{s}_rows": summary.rows_per_split.get(s, 0) for s in SPLITS},
        "decode_failures": len(failures),
        "images_per_s": round(summary.images_per_s, 1),
        "seconds": round(summary.seconds, 2),
        "megabytes": round(summary.bytes_written / 2**20, 2),
        "fingerprint": summary.fingerprint,
        "uv_column": tensors.split_has_uv(layout.tensors_split_dir(resolution, "train")),
        "preview": md(png_md(preview, "tensors by class") if preview else "", table_md(failures)),
    })


def _preview(split_dir, resolution: int, per_class: int = 4) -> bytes | None:
    """Up to four tensors of each class from the first part file, as the network sees them."""
    if not tensors.part_files(split_dir):
        return None
    first_part = tensors.read_split(split_dir, resolution, max_parts=1)
    images, labels, taken = [], [], {}
    for class_id, pixels in zip(first_part.class_ids.tolist(), first_part.pixels):
        if taken.get(class_id, 0) < per_class:
            taken[class_id] = taken.get(class_id, 0) + 1
            images.append(pixels)
            labels.append(CLASS_NAMES[class_id - 1])
    order = np.argsort([CLASS_NAMES.index(l) for l in labels], kind="stable")
    return figures.image_grid([images[i] for i in order], [labels[i] for i in order], columns=per_class * 2)


# Blocking: normalization_stats and training do not run on tensors that lost rows or hold broken ones.
@dg.asset_check(asset=image_tensors, blocking=True,
                description="Tensor rows equal labelled, decodable images (with UV: those with both pictures); none lost.")
def tensor_rows_match_labels(storage: StorageResource, warehouse: WarehouseResource,
                             preprocessing: PreprocessingResource) -> dg.AssetCheckResult:
    layout = storage.layout
    expected, without_uv = preparation.expected_tensor_rows(warehouse.get())
    found = {s: tensors.count_rows(layout.tensors_split_dir(preprocessing.resolution, s)) for s in SPLITS}
    passed = all(found.get(s, 0) == int(expected.get(s, 0)) for s in SPLITS)
    return dg.AssetCheckResult(passed=passed, metadata={
        **{f"{s}_expected": int(expected.get(s, 0)) for s in SPLITS}, **{f"{s}_found": found[s] for s in SPLITS},
        "left_out_without_uv": without_uv})


@dg.asset_check(asset=image_tensors, blocking=True,
                description="Every part file reads back whole: its rows equal its footer's count and every "
                            "pixels value holds resolution^2 bytes.")
def pixel_length_is_resolution_squared(storage: StorageResource,
                                       preprocessing: PreprocessingResource) -> dg.AssetCheckResult:
    res = preprocessing.resolution
    splits = {s: read_back_split(storage.layout.tensors_split_dir(res, s), res) for s in SPLITS}
    return dg.AssetCheckResult(passed=all(f.ok and f.files for f in splits.values()), metadata={
        "expected_bytes": res * res,
        **{f"{s}_rows_read": f.rows for s, f in splits.items()},
        **{f"{s}_bad_lengths": f.bad_lengths for s, f in splits.items()},
        "problems": "; ".join(p for f in splits.values() for p in f.problems) or "none"})


@dg.asset(group_name="prepare", kinds={"numpy"}, deps=[image_tensors])
def normalization_stats(context: dg.AssetExecutionContext, storage: StorageResource,
                        preprocessing: PreprocessingResource) -> dg.MaterializeResult:
    """Per-pixel mean and standard deviation of the training split (the paper's per-pixel normalization)."""
    layout = storage.layout
    res = preprocessing.resolution
    mean, std = preparation.write_stats(layout, res)
    picture = figures.image_grid([mean, std], ["mean", "std"], columns=2, cmap="viridis")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(layout.stats_path(res))),
        "mean_of_means": float(mean.mean()),
        "mean_std": float(std.mean()),
        "min_std": float(std.min()),
        "images": md(png_md(picture, "mean and std images")),
    })


@dg.asset_check(asset=normalization_stats,
                description="stats.npz is resolution x resolution and finite, std is at or above its floor, and "
                            "at most half the pixels sit at the floor (raw spread below one grey level).")
def stats_are_usable(storage: StorageResource, preprocessing: PreprocessingResource) -> dg.AssetCheckResult:
    res = preprocessing.resolution
    mean, std = tensors.load_stats(storage.layout.stats_path(res))
    report = check_stats(mean, std, res, tensors.STD_FLOOR)
    return dg.AssetCheckResult(passed=report.ok, metadata={
        "shape": str(report.shape), "min_std": report.min_std, "floored_share": round(report.floored_share, 4),
        "problems": "; ".join(report.problems) or "none"})
