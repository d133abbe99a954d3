"""Group ``train``: CrystalNet trained on the prepared tensors, registered and maybe promoted."""

import hashlib
import json
import os
import time
from typing import Dict, Optional

import dagster as dg

from assets.metadata import md, png_md
from assets.prepare import normalization_stats
from crystal_pipeline.ingest import archive
from crystal_pipeline.reporting import figures
from crystal_pipeline.tensors import preparation
from crystal_pipeline.evaluation import registry
from resources import ComputeResource, PreprocessingResource, StorageResource, WarehouseResource


class TrainRunConfig(dg.Config):
    """Which preset to train, with per-field overrides (values as strings, like the CLI's --set)."""

    preset: str = "demo"
    overrides: Dict[str, str] = {}
    resume: bool = False
    accuracy_floor: float = 0.3


MODEL_CHECKS = [
    dg.AssetCheckSpec("val_accuracy_above_floor", asset="crystalnet_model",
                      description="Validation accuracy is above the configured floor."),
    dg.AssetCheckSpec("val_accuracy_above_majority_rate", asset="crystalnet_model",
                      description="The model beats always answering the most common class."),
]


@dg.asset(group_name="train", kinds={"pytorch"}, deps=[normalization_stats], check_specs=MODEL_CHECKS)
def crystalnet_model(context: dg.AssetExecutionContext, config: TrainRunConfig, storage: StorageResource,
                     warehouse: WarehouseResource, preprocessing: PreprocessingResource,
                     compute: ComputeResource):
    """CrystalNet (the paper's Table 1) trained with a preset; registered in ``models``, promoted if not worse."""
    import numpy as np

    from crystal_pipeline.model import load, predict_proba
    from crystal_pipeline.training import TrainConfig, train

    layout, wh = storage.layout, warehouse.get()
    train_config = TrainConfig.from_preset(config.preset, dict(config.overrides))
    res = train_config.resolution
    if res != preprocessing.resolution:
        context.log.info(f"preset {config.preset} trains at {res} px: writing tensors at that resolution")
        preparation.prepare_resolution(wh, layout, res, workers=preprocessing.workers)
    trained_on = archive.provenance(layout.raw_dir)

    # One working folder per config, so `resume: true` continues a killed run of the same config.
    config_key = hashlib.sha256(json.dumps(train_config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    staging = layout.models_dir / "_training" / config_key / "model.pt"
    log_lines: list[dict] = []

    def progress(stats: dict) -> None:
        log_lines.append(stats)
        val = stats.get("val_acc")
        context.log.info(
            f"update {stats['update']}/{stats['total']} loss {stats['loss']:.3f} train_acc {stats['train_acc']:.3f}"
            + (f" val_acc {val:.3f}" if val is not None else "")
            + f" {stats['images_per_s']:.0f} img/s, ETA {stats.get('eta_s', 0):.0f}s")

    started = time.perf_counter()
    result = train(train_config, layout.tensors_dir(res), staging, device=compute.device, trained_on=trained_on,
                   resume=config.resume, progress=progress)
    version = registry.new_model_version(staging)
    final = layout.model_path(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)

    class_ids = result.val_class_ids
    scores = registry.score(class_ids, result.val_probs)
    current = registry.production_model(wh)
    current_scores = None
    if current is not None:
        # Re-score the production model on today's validation split, at its own resolution.
        old = load(current["path"], compute.device)
        val = preparation.current_val_split(wh, layout, old.resolution, workers=preprocessing.workers)
        current_scores = registry.score(val.class_ids, predict_proba(old, val.pixels))
    promote, reason = registry.not_worse(scores, current_scores)
    registry.register(wh, model_version=version, preset=config.preset, resolution=res, path=final,
                      trained_on=trained_on, scores=scores, promote=promote)
    context.log.info(reason)

    majority = float(np.bincount(class_ids, minlength=11).max() / max(1, len(class_ids)))
    curve = figures.training_curves(log_lines or result.history, f"CrystalNet {config.preset} ({res} px)")
    yield dg.MaterializeResult(metadata={
        "model_version": version,
        "path": dg.MetadataValue.path(str(final)),
        "preset": config.preset,
        "resolution": res,
        "updates": result.updates,
        "device": result.device,
        "val_images": len(class_ids),
        "val_accuracy": _num(scores.val_accuracy),
        "crystal_recall": _num(scores.crystal_recall),
        "crystal_auc": _num(scores.crystal_auc),
        "crystal_threshold": _num(scores.crystal_threshold),
        "images_per_s": round(result.images_per_s, 1),
        "train_seconds": round(result.seconds, 1),
        "asset_seconds": round(time.perf_counter() - started, 1),
        "trained_on": trained_on,
        "promoted": promote,
        "promotion": reason,
        "curves": md(png_md(curve, "training curves")),
    })
    yield dg.AssetCheckResult(check_name="val_accuracy_above_floor",
                              passed=bool(scores.val_accuracy >= config.accuracy_floor),
                              metadata={"val_accuracy": _num(scores.val_accuracy), "floor": config.accuracy_floor})
    yield dg.AssetCheckResult(check_name="val_accuracy_above_majority_rate",
                              passed=bool(scores.val_accuracy > majority),
                              metadata={"val_accuracy": _num(scores.val_accuracy), "majority_rate": round(majority, 4)})


def registered_model(wh, model_version: Optional[str] = None) -> dict:
    """The named or the production model's ``models`` row, for every asset that uses a model;
    a missing one fails the step with what to do."""
    try:
        return registry.model_row(wh, model_version)
    except LookupError as error:
        raise dg.Failure(str(error)) from error


def _num(x: float):
    return None if x != x else round(float(x), 4)
