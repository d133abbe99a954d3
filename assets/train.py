"""Group ``train``: CrystalNet trained on the prepared tensors, registered and maybe promoted."""

import time
from typing import Dict, Optional

import dagster as dg

from assets.metadata import md, png_md
from assets.prepare import normalization_stats
from crystal_pipeline.evaluation import registry
from crystal_pipeline.ingest import archive
from crystal_pipeline.reporting import figures
from crystal_pipeline.reporting.numbers import finite_or_none
from crystal_pipeline.tensors import preparation
from resources import ComputeResource, PreprocessingResource, StorageResource, WarehouseResource


class TrainRunConfig(dg.Config):
    """Which preset to train, with per-field overrides (values as strings, like the CLI's --set).

    ``init_from`` fine-tunes instead of training from scratch: ``production`` or a model
    version (use preset ``finetune``; its resolution follows the parent's unless overridden).
    ``resume`` continues the newest checkpoint of the same config (runtime fields such as
    ``log_every`` or ``max_updates_this_session`` may differ) that no running run holds.
    The accuracy floor is relative to the majority-class rate unless ``accuracy_floor`` is set.
    """

    preset: str = "demo"
    overrides: Dict[str, str] = {}
    init_from: Optional[str] = None
    resume: bool = False
    accuracy_floor: Optional[float] = None
    error_reduction_floor: float = registry.DEFAULT_ERROR_REDUCTION


MODEL_CHECKS = [
    dg.AssetCheckSpec("val_accuracy_above_floor", asset="crystalnet_model",
                      description="Validation accuracy removes at least error_reduction_floor (default 25%) of the "
                                  "errors of always answering the majority class: floor = majority + 0.25 x "
                                  "(1 - majority), 0.59 at a majority rate of 0.45. accuracy_floor in the run "
                                  "config sets an absolute floor instead. Decided before promotion: a model "
                                  "below it is registered with is_production false and never labels a plate."),
    dg.AssetCheckSpec("val_accuracy_above_majority_rate", asset="crystalnet_model",
                      description="The model beats always answering the most common class."),
]


@dg.asset(group_name="train", kinds={"pytorch"}, deps=[normalization_stats], check_specs=MODEL_CHECKS, pool="gpu")
def crystalnet_model(context: dg.AssetExecutionContext, config: TrainRunConfig, storage: StorageResource,
                     warehouse: WarehouseResource, preprocessing: PreprocessingResource,
                     compute: ComputeResource, pipes_subprocess_client: dg.PipesSubprocessClient):
    """CrystalNet (the paper's Table 1) trained with a preset; registered in ``models``; promoted when it
    clears the accuracy floor and is not worse than production (a model below the floor is registered
    with is_production false and never labels a plate; the metadata's ``promotion`` says why).

    Training runs as its own process, ``torchrun --nproc_per_node N -m crystal_pipeline
    train``, launched through Dagster Pipes (``compute.launcher``), which streams its
    progress into this step's log and sends its summary back. Each run trains in its own
    staging folder (``DataLayout.training_run_dir``); a run stopped by
    ``max_updates_this_session`` fails with where its checkpoint is.
    """
    from crystal_pipeline.evaluation import promotion, staging
    from crystal_pipeline.model.device import resolve_device
    from crystal_pipeline.training import TrainConfig
    from crystal_pipeline.training.config import updates_reason

    layout, wh = storage.layout, warehouse.get()
    overrides, parent_path = _init_overrides(wh, config)
    # The preset's budget for the arithmetic this machine trains in (training.config.BF16_UPDATES),
    # pinned so that the launched trainer runs exactly this config.
    train_config = TrainConfig.from_preset(config.preset, overrides, device_type=resolve_device(compute.device).type)
    overrides = {**overrides, "updates": str(train_config.updates)}
    res = train_config.resolution
    if res != preprocessing.resolution:
        context.log.info(f"preset {config.preset} trains at {res} px: writing tensors at that resolution")
        preparation.prepare_resolution(wh, layout, res, workers=preprocessing.workers, crop=preprocessing.crop)
    trained_on = archive.provenance(layout.raw_dir)
    log_lines: list[dict] = []

    def progress(stats: dict) -> None:  # in process; through Pipes the trainer logs itself
        log_lines.append(stats)
        val = stats.get("val_acc")
        context.log.info(
            f"update {stats['update']}/{stats['total']} loss {stats['loss']:.3f} train_acc {stats['train_acc']:.3f}"
            + (f" val_acc {val:.3f}" if val is not None else "")
            + f" {stats['images_per_s']:.0f} img/s, ETA {stats.get('eta_s', 0):.0f}s")

    started = time.perf_counter()
    with staging.claim(layout, train_config.identity_key(), context.run.run_id, resume=config.resume) as run:
        resumed_from = staging.checkpoint_update(run.checkpoint_path) if run.resumed else 0
        context.log.info(f"staging folder {run.folder}" + (f", resuming at update {resumed_from}" if run.resumed else ""))
        result, launch = _run_training(context, compute, pipes_subprocess_client, config, train_config,
                                       layout.tensors_dir(res), run, trained_on, progress, log_lines,
                                       overrides, parent_path, data_dir=layout.data_dir)
        if not result.finished:
            raise _stopped(result, train_config, run)
        class_ids = result.val_class_ids
        scores = registry.calibrate(class_ids, result.val_probs)  # T and the hit threshold, on val
        # The floor is decided before promotion: a model below it is registered, never production.
        floor = registry.floor_for(class_ids, absolute=config.accuracy_floor,
                                   error_reduction=config.error_reduction_floor)
        decision = promotion.promote(wh, layout, run.model_path, scores, floor=floor, preset=config.preset,
                                     resolution=res, trained_on=trained_on, device=compute.device,
                                     workers=preprocessing.workers, crop=preprocessing.crop)
        run.release(finished=True)
    (context.log.info if decision.promoted or floor.cleared_by(scores) else context.log.warning)(decision.reason)

    curve = figures.training_curves(log_lines or result.history, f"CrystalNet {config.preset} ({res} px)")
    yield dg.MaterializeResult(metadata={
        "model_version": decision.model_version,
        "path": dg.MetadataValue.path(str(decision.path)),
        "preset": config.preset,
        "resolution": res,
        "updates": result.updates,
        "updates_from": updates_reason(config.preset, train_config.updates, overridden="updates" in config.overrides),
        "resumed_from_update": resumed_from,
        "device": result.device,
        "precision": result.precision,
        **launch,
        "val_images": len(class_ids),
        **{name: finite_or_none(getattr(scores, name))
           for name in ("val_accuracy", "crystal_recall", "crystal_auc", "crystal_threshold", "temperature")},
        "images_per_s": round(result.images_per_s, 1),
        "train_seconds": round(result.seconds, 1),
        "asset_seconds": round(time.perf_counter() - started, 1),
        "trained_on": trained_on,
        "parent_version": train_config.init_from,
        "freeze_features": train_config.freeze_features,
        "promoted": decision.promoted,
        "promotion": decision.reason,
        "accuracy_floor": round(floor.value, 4),
        "production_problem": decision.production_problem or "none",
        "production_val_accuracy": (None if decision.production_scores is None
                                    else finite_or_none(decision.production_scores.val_accuracy)),
        "curves": md(png_md(curve, "training curves")),
    })
    yield dg.AssetCheckResult(check_name="val_accuracy_above_floor", passed=floor.cleared_by(scores),
                              metadata={"val_accuracy": finite_or_none(scores.val_accuracy),
                                        "floor": round(floor.value, 4), "majority_rate": round(floor.majority_rate, 4),
                                        "floor_rule": floor.rule, "promoted": decision.promoted,
                                        "promotion": decision.reason})
    yield dg.AssetCheckResult(check_name="val_accuracy_above_majority_rate",
                              passed=bool(scores.val_accuracy > floor.majority_rate),
                              metadata={"val_accuracy": finite_or_none(scores.val_accuracy),
                                        "majority_rate": round(floor.majority_rate, 4)})


def _run_training(context, compute: ComputeResource, client: dg.PipesSubprocessClient, config: TrainRunConfig,
                  train_config, tensors_dir, run, trained_on: str, progress, log_lines: list,
                  overrides: dict, parent_path, *, data_dir):
    """Train in process or through Pipes + torchrun: the same TrainResult either way (the
    trainer hands it back in ``--result``), the progress lines in ``log_lines``, and
    metadata saying how it ran."""
    if compute.launcher == "in_process":
        from crystal_pipeline.training import train

        result = train(train_config, tensors_dir, run.model_path, device=compute.device, trained_on=trained_on,
                       resume=run.resumed, progress=progress, init_artifact=parent_path)
        return result, {"launcher": "in_process", "world_size": 1}
    if compute.launcher not in ("pipes", "k8s"):
        raise dg.Failure(f"compute.launcher must be 'pipes', 'k8s' or 'in_process', got {compute.launcher!r}")
    from crystal_pipeline.training.launch import torchrun_command
    from crystal_pipeline.training.result_file import read_result

    command = torchrun_command(tensors_dir=tensors_dir, out_path=run.model_path, result_path=run.result_path,
                               preset=config.preset, overrides=overrides,
                               nproc_per_node=compute.nproc_per_node, device=compute.device,
                               trained_on=trained_on, resume=run.resumed, init_artifact=parent_path,
                               python=compute.k8s_python if compute.launcher == "k8s" else None)
    context.log.info("launching " + " ".join(command))
    run.result_path.unlink(missing_ok=True)
    # Exactly what the trainer's rank 0 reported through Pipes, besides its log lines.
    if compute.launcher == "k8s":
        messages = _run_in_pod(context, compute, command, data_dir).get_custom_messages()
    else:
        messages = client.run(context=context, command=list(command)).get_custom_messages()
    if not run.result_path.is_file():
        raise dg.Failure(f"training process ended without writing its result {run.result_path}")
    result, lines = read_result(run.result_path)
    run.result_path.unlink()
    log_lines.extend(lines)  # already in the log through Pipes; kept for the training curves
    summary = messages[-1] if messages else {}
    return result, {"launcher": f"{compute.launcher} (torchrun)", "world_size": int(summary.get("world_size", 0)),
                    "command": " ".join(command)}


def _run_in_pod(context, compute: ComputeResource, command, data_dir):
    """The torchrun command in a Kubernetes pod through Pipes; the data volume is mounted at
    the data directory's own path, so the trainer writes where this step reads."""
    from dagster_k8s import PipesK8sClient

    from crystal_pipeline.service.k8s_pod import TrainingPod, parse_node_selector, training_pod_spec

    if not compute.k8s_image:
        raise dg.Failure("compute.launcher is 'k8s' but compute.k8s_image is empty: name the training image")
    pod = TrainingPod(data_dir=str(data_dir.resolve()), data_claim=compute.k8s_data_claim, gpus=compute.k8s_gpus,
                      node_selector=parse_node_selector(compute.k8s_node_selector))
    client = PipesK8sClient(kubeconfig_file=compute.k8s_kubeconfig or None,
                            load_incluster_config=not compute.k8s_kubeconfig)
    return client.run(context=context, image=compute.k8s_image, command=list(command),
                      namespace=compute.k8s_namespace, base_pod_spec=training_pod_spec(pod))


def _init_overrides(wh, config: TrainRunConfig):
    """The run's overrides, and the parent's file for a fine-tune: ``init_from`` resolved to a
    version (so the staging identity names the parent, not the word 'production') and the
    resolution set to the parent's unless the run overrides it."""
    overrides = dict(config.overrides)
    if not config.init_from:
        return overrides, None
    try:  # 'production': the production model of the kind this run trains (visible or fused)
        kind = preparation.channels_trained(wh, overrides.get("inputs", "auto"))
        parent = registry.parent_model(wh, config.init_from, kind)
    except (LookupError, ValueError) as error:
        raise dg.Failure(f"init_from={config.init_from!r}: {error}") from error
    overrides["init_from"] = parent["model_version"]
    overrides.setdefault("resolution", str(parent["resolution"]))
    return overrides, parent["path"]


def _stopped(result, train_config, run) -> dg.Failure:
    """The failure of a run that stopped at ``max_updates_this_session``: where, and what to do."""
    return dg.Failure(
        description=(f"training stopped at update {result.updates} of {train_config.updates} "
                     f"(max_updates_this_session={train_config.max_updates_this_session}); no model was registered. "
                     f"Its checkpoint is {result.checkpoint_path}. Re-run with resume: true to continue from it."),
        metadata={"stopped_at_update": result.updates, "updates": train_config.updates,
                  "checkpoint": dg.MetadataValue.path(str(result.checkpoint_path)),
                  "staging_folder": dg.MetadataValue.path(str(run.folder)),
                  "identity_key": train_config.identity_key()})


def registered_model(wh, model_version: Optional[str] = None) -> dict:
    """The named or the production model's ``models`` row, for every asset that uses a model;
    a missing one fails the step with what to do."""
    try:
        return registry.model_row(wh, model_version)
    except LookupError as error:
        raise dg.Failure(str(error)) from error
