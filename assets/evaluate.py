"""Group ``evaluate``: the paper's tables and figures for our model, beside the baselines it beat."""

import pickle
import time
from pathlib import Path
from typing import List

import dagster as dg

from assets.metadata import md, png_md
from assets.prepare import image_tensors
from assets.train import crystalnet_model, registered_model
from crystal_pipeline.ingest import archive
from crystal_pipeline.reporting.numbers import finite_or_none
from crystal_pipeline.files import atomic_write_bytes, atomic_write_text
from crystal_pipeline.tensors import preparation
from crystal_pipeline.warehouse import labels as label_table
from resources import ComputeResource, PreprocessingResource, StorageResource, WarehouseResource

# The split the evaluation report, Table 5 and the studies score and name (metrics.json "split"):
# the held-out test split only reports; val tunes, calibrates and promotes (DESIGN.md "Split").
EVALUATION_SPLIT = "test"


def _archive_description(storage: StorageResource, wh) -> str:
    source = archive.provenance(storage.layout.raw_dir)
    kind = "synthetic archive" if source == "synthetic" else f"archive {source}"
    images = label_table.labelled_count(wh)
    return f"{kind}, {images} consensus-labelled images"


def _model_test_probs(model_row: dict, storage, wh, preprocessing, device: str):
    """The model's probabilities on today's test split (reports only), at the model's resolution."""
    from crystal_pipeline.evaluation import registry
    from crystal_pipeline.model import predict_proba
    from crystal_pipeline.model.fusion import model_inputs

    model = registry.load_registered(model_row, device)  # sha256 checked against the row first
    test = preparation.current_split(wh, storage.layout, model.resolution, EVALUATION_SPLIT, workers=preprocessing.workers,
                                     crop=preprocessing.crop)
    started = time.perf_counter()
    probs = predict_proba(model, model_inputs(model, test))
    return model, test, probs, time.perf_counter() - started


@dg.asset(group_name="evaluate", kinds={"pytorch"}, deps=[crystalnet_model])
def crystalnet_evaluation(context: dg.AssetExecutionContext, storage: StorageResource,
                          warehouse: WarehouseResource, preprocessing: PreprocessingResource,
                          compute: ComputeResource) -> dg.MaterializeResult:
    """Table 2, Table 4, Figure 3, Figure 5 and the review share for the production model, on the test split."""
    from crystal_pipeline.evaluation import evaluation_report

    wh = warehouse.get()
    row = registered_model(wh)
    model, test, probs, seconds = _model_test_probs(row, storage, wh, preprocessing, compute.device)
    out_dir = storage.layout.evaluation_report_dir(row["model_version"])
    from crystal_pipeline.model import calibration_of

    report = evaluation_report(
        probs, test.class_ids, model_name=f"CrystalNet {row['model_version']} ({row['preset']}, {model.resolution} px)",
        model_version=row["model_version"], split=EVALUATION_SPLIT, temperature=calibration_of(model.artifact_meta)[0],
        archive_description=_archive_description(storage, wh),
        first_layer_weights=model.conv1.weight.detach().cpu().numpy(), out_dir=out_dir)
    context.log.info(f"report written to {out_dir}")
    return dg.MaterializeResult(metadata={
        "model_version": row["model_version"],
        "report": dg.MetadataValue.path(str(storage.layout.evaluation_report_html(row["model_version"]))),
        "metrics_json": dg.MetadataValue.path(str(out_dir / "metrics.json")),
        "split": EVALUATION_SPLIT,
        "test_images": len(test),
        "predict_seconds": round(seconds, 2),
        **{k: finite_or_none(v) for k, v in report.metrics.items()},
        "evaluation": dg.MetadataValue.md(report.markdown_embedded()),
    })


class BaselineConfig(dg.Config):
    seed: int = 0
    knn_neighbors: int = 10


@dg.asset(group_name="evaluate", kinds={"sklearn"}, deps=[image_tensors])
def baseline_models(context: dg.AssetExecutionContext, config: BaselineConfig, storage: StorageResource,
                    preprocessing: PreprocessingResource) -> dg.MaterializeResult:
    """RF and MLP on Cumbaa & Jurisica-style features, kNN on pixels; fitted on the training split."""
    from crystal_pipeline.baselines import extract_features_cached, fit_baselines

    layout = storage.layout
    workers = preprocessing.workers or 2
    train = extract_features_cached(layout.tensors_split_dir(preprocessing.resolution, "train"), layout.feature_cache_dir, workers=workers)
    context.log.info(f"features: {len(train.image_ids)} training images, {train.ms_per_image:.1f} ms/image"
                     + (" (cache)" if train.from_cache else ""))
    models = fit_baselines(train.features, train.pixels, train.class_ids, seed=config.seed, workers=workers,
                           knn_neighbors=config.knn_neighbors)
    path = atomic_write_bytes(layout.baselines_path(preprocessing.resolution), pickle.dumps(models))
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "train_images": len(train.image_ids),
        "feature_ms_per_image": round(train.ms_per_image, 2),
        "features_from_cache": train.from_cache,
        **{f"fit_seconds[{name}]": round(m.fit_seconds, 2) for name, m in models.items()},
    })


@dg.asset(group_name="evaluate", kinds={"sklearn", "pytorch"}, deps=[baseline_models, crystalnet_evaluation])
def model_comparison(context: dg.AssetExecutionContext, storage: StorageResource, warehouse: WarehouseResource,
                     preprocessing: PreprocessingResource, compute: ComputeResource) -> dg.MaterializeResult:
    """Table 5 and Figure 5: CrystalNet against RF, Neural Net and kNN on the same test-split images."""
    import numpy as np

    from crystal_pipeline.baselines import (CRYSTALNET, baselines_for_metrics, extract_features_cached, model_scores,
                                            predict_proba_baselines)
    from crystal_pipeline.evaluation.results import read_metrics_json, write_metrics_json
    from crystal_pipeline.model import apply_temperature, calibration_of
    from crystal_pipeline.evaluation import crystal_probability, crystal_truth, roc_curve, binary_auc
    from crystal_pipeline.reporting.evaluation_figures import roc_figure

    layout, wh = storage.layout, warehouse.get()
    models = pickle.loads(layout.baselines_path(preprocessing.resolution).read_bytes())
    test = extract_features_cached(layout.tensors_split_dir(preprocessing.resolution, EVALUATION_SPLIT), layout.feature_cache_dir,
                                   workers=preprocessing.workers or 2)
    predictions = predict_proba_baselines(models, test.features, test.pixels)
    row = registered_model(wh)
    cn_model, cn_test, cn_probs, cn_seconds = _model_test_probs(row, storage, wh, preprocessing, compute.device)
    cn_probs = apply_temperature(cn_probs, calibration_of(cn_model.artifact_meta)[0])  # as its report scores it
    if list(cn_test.image_ids) != list(test.image_ids):
        raise dg.Failure("CrystalNet's and the baselines' test images differ; re-materialize the tensors")
    probs = {CRYSTALNET: cn_probs, **{name: p.probs for name, p in predictions.items()}}
    seconds = {CRYSTALNET: cn_seconds, **{name: p.seconds for name, p in predictions.items()}}
    feature_seconds = {name: test.seconds for name, m in models.items() if m.reads == "features"}
    scores = model_scores(test.class_ids, probs, seconds, feature_seconds)
    from crystal_pipeline.baselines import table5_markdown

    table = table5_markdown(scores, _archive_description(storage, wh), split=EVALUATION_SPLIT)
    truth = crystal_truth(test.class_ids)
    curves = {}
    for name, p in probs.items():
        fpr, tpr, _ = roc_curve(truth, crystal_probability(p))
        curves[name] = (fpr, tpr, binary_auc(truth, crystal_probability(p)))
    roc = roc_figure(curves, title="Crystal vs no-crystal ROC (Figure 5)")
    table_path, roc_path = layout.model_comparison_paths(row["model_version"])
    atomic_write_bytes(roc_path, roc)
    atomic_write_text(table_path, table + f"\n\n![ROC]({roc_path.name})\n")
    # Baselines go into the evaluation's metrics.json (docs/decisions.md): one file per model and split.
    here = {"model_version": row["model_version"], "split": EVALUATION_SPLIT, "n_images": int(len(test.image_ids))}
    result = read_metrics_json(table_path.parent) or {}
    result = result if all(result.get(k) == v for k, v in here.items()) else here  # never beside another split's
    write_metrics_json(table_path.parent, {**result, "baselines": baselines_for_metrics(scores)})
    accuracies = {s["name"]: s["accuracy"] for s in scores}
    order = sorted(accuracies, key=accuracies.get)
    context.log.info("accuracy order: " + " < ".join(f"{n} {accuracies[n]:.3f}" for n in order))
    return dg.MaterializeResult(metadata={
        **{f"accuracy[{n}]": round(float(a), 4) for n, a in accuracies.items()},
        **{f"balanced_accuracy[{s['name']}]": finite_or_none(s["balanced_accuracy"]) for s in scores},
        **{f"mcnemar_p_vs_crystalnet[{s['name']}]": finite_or_none(s["mcnemar_p_vs_crystalnet"], 6)
           for s in scores if s["name"] != CRYSTALNET},
        "split": EVALUATION_SPLIT,
        "test_images": int(len(test.image_ids)),
        "report": dg.MetadataValue.path(str(table_path)),
        "table5": md(table, png_md(roc, "ROC")),
        "majority_rate": round(float(np.bincount(test.class_ids).max() / max(1, len(test.class_ids))), 4),
    })


class StudyConfig(dg.Config):
    """Study settings: a preset plus overrides, scaled down by default so a CPU finishes in minutes."""

    preset: str = "demo"
    overrides: dict = {"updates": "100"}
    fractions: List[float] = [0.25, 0.5, 0.75, 1.0]
    resolutions: List[int] = [32, 64, 128]


@dg.asset(group_name="evaluate", kinds={"pytorch"}, deps=[image_tensors], tags={"study": "paper"})
def training_size_study(context: dg.AssetExecutionContext, config: StudyConfig, storage: StorageResource,
                        preprocessing: PreprocessingResource, warehouse: WarehouseResource,
                        compute: ComputeResource) -> dg.MaterializeResult:
    """Figure 4: test-split accuracy against the number of training images (nested subsets)."""
    from crystal_pipeline.reporting.evaluation_figures import training_size_curve
    from crystal_pipeline.evaluation.studies import training_size_study as run_study
    from crystal_pipeline.training import TrainConfig

    layout = storage.layout
    cfg = TrainConfig.from_preset(config.preset, {k: str(v) for k, v in config.overrides.items()})
    if not layout.stats_path(cfg.resolution).exists() or cfg.resolution != preprocessing.resolution:
        preparation.prepare_resolution(warehouse.get(), layout, cfg.resolution, workers=preprocessing.workers,
                                       crop=preprocessing.crop)
    points = run_study(layout.tensors_dir(cfg.resolution), layout.study_dir("training_size"), cfg,
                       config.fractions, device=compute.device, progress=context.log.info)
    curve = training_size_curve([p.train_images for p in points], {"CrystalNet (ours)": [p.test_accuracy for p in points]})
    table = "\n".join([f"Test split, {points[0].test_images if points else 0} images.", "",
                       "| training images | fraction | test accuracy | seconds |", "|---:|---:|---:|---:|"]
                      + [f"| {p.train_images} | {p.setting:.2f} | {p.test_accuracy:.4f} | {p.seconds:.1f} |"
                         for p in points])
    return dg.MaterializeResult(metadata={
        "preset": config.preset,
        "split": EVALUATION_SPLIT,
        "points": len(points),
        "study": md(table, png_md(curve, "Figure 4")),
    })


@dg.asset(group_name="evaluate", kinds={"pytorch"}, deps=[image_tensors], tags={"study": "paper"})
def resolution_study(context: dg.AssetExecutionContext, config: StudyConfig, storage: StorageResource,
                     warehouse: WarehouseResource, preprocessing: PreprocessingResource,
                     compute: ComputeResource) -> dg.MaterializeResult:
    """Table 3: test-split accuracy and training time at each resolution."""
    from crystal_pipeline.evaluation.tables import markdown_table, resolution_grid
    from crystal_pipeline.evaluation.studies import resolution_study as run_study
    from crystal_pipeline.training import TrainConfig

    layout, wh = storage.layout, warehouse.get()
    cfg = TrainConfig.from_preset(config.preset, {k: str(v) for k, v in config.overrides.items()})

    def prepare(res: int) -> Path:
        if res != preprocessing.resolution or not layout.stats_path(res).exists():
            preparation.prepare_resolution(wh, layout, res, workers=preprocessing.workers, crop=preprocessing.crop)
        return layout.tensors_dir(res)

    points = run_study(prepare, layout.study_dir("resolution"), cfg, config.resolutions,
                       device=compute.device, progress=context.log.info)
    grid = resolution_grid({int(p.setting): (100 * p.test_accuracy, p.seconds) for p in points})
    return dg.MaterializeResult(metadata={
        "preset": config.preset,
        "split": EVALUATION_SPLIT,
        "table3": md("Paper: HWI data, GTX Titan, full schedule. Ours: this archive and device, "
                     f"preset {config.preset} with {config.overrides}; test split, "
                     f"{points[0].test_images if points else 0} images.", markdown_table(grid)),
        **{f"test_accuracy[{int(p.setting)}px]": round(p.test_accuracy, 4) for p in points},
    })
