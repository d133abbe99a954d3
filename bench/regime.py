"""The regime run: CrystalNet against RF, MLP and kNN at the largest scale a machine affords.

DESIGN.md's benchmark protocol: every figure on the held-out ``test`` split with a 95%
bootstrap interval, an order between two models claimed only with a paired McNemar
test on the same images. The demo's numbers show the pipeline works; this run is the
one the docs quote for "who wins".

Steps (each skipped when its output is already in ``--workdir``, so a run can be resumed
and extended with more variants):
  1. a generated archive (``--plates`` x 1536 wells at ``--difficulty``),
  2. ingest, annotations and consensus through the real pipeline
     (``dagster asset materialize -m definitions --select group:ingest``),
  3. tensors at the training resolution and at 128 px for the baselines (library),
  4. CrystalNet for every ``--variant`` and ``--seeds`` (library ``train``; temperature
     fitted on val; scored on test),
  5. the baselines fitted on train and scored on the same test images, with McNemar
     against every CrystalNet run and between each pair of baselines.

One JSON line per figure on stdout; everything also lands in ``<workdir>/regime.json``.

    .venv/bin/python bench/regime.py --workdir /tmp/regime --plates 12 --seeds 0,1,2
    .venv/bin/python bench/regime.py --workdir /tmp/paper --plates 107 --prepare-only   # the paper's scale, timed
    .venv/bin/python bench/regime.py --workdir /tmp/regime --variant plain:class_balance=none \\
        --variant balanced:class_balance=sampling,balance_power=0.5 --seeds 0 --no-baselines

On a GPU machine (no Dagster there) pass ``--tensors DIR`` pointing at prepared tensors
and ``--preset paper``; steps 1-3 are then skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from machine import cpu_name  # bench/machine.py

from crystal_pipeline.synthetic.imager import DEMO_IMAGER

ROOT = Path(__file__).resolve().parents[1]


def emit(record: dict, sink: list) -> None:
    sink.append(record)
    print(json.dumps(record, default=_plain), flush=True)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def build_archive(workdir: Path, plates: int, difficulty: float, seed: int, sink: list,
                  imager: str = DEMO_IMAGER) -> Path:
    from crystal_pipeline.synthetic import write_archive

    raw = workdir / "raw"
    if not (raw / "plates").is_dir():
        summary = write_archive(raw, plates=plates, seed=seed, difficulty=difficulty, workers=os.cpu_count(),
                                imager=imager)
        emit({"figure": "archive", "plates": plates, "images": summary.images, "difficulty": difficulty,
              "imager": imager, "size": summary.size,
              "unanimous_images": summary.unanimous_images, "seconds": round(summary.seconds, 1),
              "peak_rss_mib": _peak_rss_mib()}, sink)  # first step: self = the generator (+ imports), children = its workers
    return raw


def ingest(workdir: Path, sink: list) -> None:
    if (workdir / "warehouse.duckdb").exists():
        return
    env = {**os.environ, "CRYSTAL_DATA_DIR": str(workdir), "DAGSTER_HOME": str(workdir / "dagster_home")}
    (workdir / "dagster_home").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "definitions",
                    "--select", "group:ingest"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    emit({"figure": "ingest", "seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": _peak_rss_mib()},
         sink)


def prepared_tensors(workdir: Path, resolution: int, sink: list | None = None) -> Path:
    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.tensors import preparation
    from crystal_pipeline.warehouse import Warehouse

    layout = DataLayout.under(workdir)
    if not layout.stats_path(resolution).exists():
        started = time.perf_counter()
        preparation.prepare_resolution(Warehouse(layout.warehouse), layout, resolution)
        emit({"figure": "prepare", "resolution": resolution, "seconds": round(time.perf_counter() - started, 1),
              "peak_rss_mib": _peak_rss_mib()}, [] if sink is None else sink)
    return layout.tensors_dir(resolution)


def _peak_rss_mib() -> dict:
    """Peak resident memory of this process and of its finished children (the Dagster run)."""
    import resource

    return {who: round(resource.getrusage(flag).ru_maxrss / 1024) for who, flag in
            (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))}


def run_crystalnet(tensors_dir: Path, models_dir: Path, name: str, preset: str, overrides: dict, seed: int,
                   device: str, sink: list, choose_on: Path | None = None) -> dict:
    """Train (or reuse) one model; its calibrated test-split metrics as a dict, probabilities kept.
    ``choose_on``: another archive's tensors (``r<res>``), every split of which scores the model
    too: a validation set larger than the archive's own, for choosing between recipes."""
    from crystal_pipeline.evaluation.registry import calibrate
    from crystal_pipeline.evaluation.results import model_metrics
    from crystal_pipeline.model import load, predict_proba
    from crystal_pipeline.tensors import read_split
    from crystal_pipeline.training import TrainConfig, train

    config = TrainConfig.from_preset(preset, {**overrides, "seed": seed})
    out = models_dir / f"{name}-s{seed}-{config.identity_key()}" / "model.pt"
    seconds = None
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        result = train(config, tensors_dir, out, device=device, trained_on="synthetic")
        seconds = result.seconds
    model = load(out, "cpu" if device == "auto" else device)
    val = read_split(tensors_dir / "val", config.resolution)
    test = read_split(tensors_dir / "test", config.resolution)
    val_probs = predict_proba(model, val.pixels)
    temperature = calibrate(val.class_ids, val_probs).temperature
    # The validation split's figures too: a recipe is chosen on val, the test split only reports.
    on_val = model_metrics(val_probs, val.class_ids, model_version=out.parent.name, split="val",
                           temperature=temperature)
    probs = predict_proba(model, test.pixels)
    metrics = model_metrics(probs, test.class_ids, model_version=out.parent.name, split="test",
                            temperature=temperature)
    record = {"figure": "crystalnet", "variant": name, "seed": seed, "preset": preset, "overrides": overrides,
              "updates": config.updates, "resolution": config.resolution, "train_seconds": seconds,
              **{k: metrics[k] for k in ("n_images", "accuracy", "accuracy_ci95", "balanced_accuracy",
                                         "balanced_accuracy_ci95", "macro_f1", "crystal_auc", "crystal_auc_ci95",
                                         "review_share_at_recall_target", "temperature", "ece_before",
                                         "ece_after")},
              "recall_per_class": {c: round(v["recall"], 3) for c, v in metrics["per_class"].items()},
              "val": {k: on_val[k] for k in VAL_FIGURES}}
    if choose_on is not None:
        other = [read_split(choose_on / side, config.resolution) for side in ("train", "val", "test")]
        pixels = np.concatenate([o.pixels for o in other])
        class_ids = np.concatenate([o.class_ids for o in other])
        on_other = model_metrics(predict_proba(model, pixels), class_ids, model_version=out.parent.name,
                                 split="choose_on", temperature=temperature)
        record["choose_on"] = {"tensors": str(choose_on), **{k: on_other[k] for k in VAL_FIGURES}}
    emit(record, sink)
    from crystal_pipeline.model import apply_temperature

    return {"name": f"{name}-s{seed}", "variant": name, "seed": seed, "probs": apply_temperature(probs, temperature),
            "class_ids": test.class_ids, "image_ids": list(test.image_ids)}


#: What a model is chosen by, on its validation split and on ``--choose-on``'s archive.
VAL_FIGURES = ("n_images", "accuracy", "balanced_accuracy", "balanced_accuracy_ci95", "crystal_auc",
               "crystal_auc_ci95", "review_share_at_recall_target")


def run_baselines(tensors_128: Path, workdir: Path, crystalnets: list[dict], sink: list) -> None:
    """RF, MLP, kNN fitted on train; each scored on test and tested against every CrystalNet run."""
    from crystal_pipeline.baselines import CRYSTALNET, extract_features_cached, fit_baselines, model_scores
    from crystal_pipeline.baselines import predict_proba_baselines

    cache = workdir / "cache" / "features"
    workers = os.cpu_count() or 2
    train = extract_features_cached(tensors_128 / "train", cache, workers=workers)
    test = extract_features_cached(tensors_128 / "test", cache, workers=workers)
    models = fit_baselines(train.features, train.pixels, train.class_ids, seed=0, workers=workers)
    predictions = predict_proba_baselines(models, test.features, test.pixels)
    compare_baselines(test.class_ids, {name: p.probs for name, p in predictions.items()}, sink)
    if not crystalnets:  # --seeds "": the baselines' own figures, with nothing to pair them against
        for row in model_scores(test.class_ids, {n: p.probs for n, p in predictions.items()}, {}):
            emit({"figure": "baseline", "model": row["name"], "against": None,
                  **{k: row.get(k) for k in ("images", "accuracy", "accuracy_ci95", "balanced_accuracy",
                                             "balanced_accuracy_ci95", "crystal_auc", "crystal_auc_ci95")},
                  "fit_seconds": round(models[row["name"]].fit_seconds, 1)}, sink)
    for run in crystalnets:
        if run["image_ids"] != list(test.image_ids):
            raise RuntimeError("CrystalNet's and the baselines' test images differ")
        probs = {CRYSTALNET: run["probs"], **{n: p.probs for n, p in predictions.items()}}
        for row in model_scores(test.class_ids, probs, {}):
            if row["name"] == CRYSTALNET:
                continue
            emit({"figure": "baseline", "model": row["name"], "against": run["name"],
                  **{k: row[k] for k in ("images", "accuracy", "accuracy_ci95", "balanced_accuracy",
                                         "balanced_accuracy_ci95", "crystal_auc", "crystal_auc_ci95",
                                         "mcnemar_p_vs_crystalnet")},
                  "fit_seconds": round(models[row["name"]].fit_seconds, 1)}, sink)


def compare_baselines(class_ids, probs: dict, sink: list) -> None:
    """Every pair of baselines on the same test images (exact McNemar), so each step of the
    paper's order kNN < RF < NN < CrystalNet has its own paired test."""
    from itertools import combinations

    from crystal_pipeline.evaluation.metrics import predicted_classes
    from crystal_pipeline.evaluation.uncertainty import mcnemar

    right = {name: predicted_classes(p) == class_ids for name, p in probs.items()}
    for a, b in combinations(sorted(right), 2):
        test = mcnemar(right[a], right[b])
        emit({"figure": "baseline_pair", "a": a, "b": b, "p": test.p_value,
              "only_a_right": int((right[a] & ~right[b]).sum()), "only_b_right": int((right[b] & ~right[a]).sum())},
             sink)


def compare_variants(runs: list[dict], sink: list) -> None:
    """Each CrystalNet run against the first variant's run of the same seed (else the first run) on
    the same test images: exact McNemar p on accuracy, and the crystal AUC difference with its
    paired bootstrap interval (both models resampled on the same images)."""
    from crystal_pipeline.evaluation.metrics import crystal_probability, crystal_truth, predicted_classes
    from crystal_pipeline.evaluation.uncertainty import mcnemar, paired_auc_difference

    if len(runs) < 2:
        return
    first_variant = runs[0]["variant"]
    for run in runs:
        if run["variant"] == first_variant and run is not runs[0]:
            continue  # seeds of the first variant are its baselines, not its rivals
        base = next((r for r in runs if r["variant"] == first_variant and r["seed"] == run["seed"]), runs[0])
        if run is base or run["image_ids"] != base["image_ids"]:
            continue  # itself, or another archive: not paired
        right = predicted_classes(base["probs"]) == base["class_ids"]
        other = predicted_classes(run["probs"]) == run["class_ids"]
        test = mcnemar(other, right)
        diff, (low, high) = paired_auc_difference(crystal_truth(run["class_ids"]), crystal_probability(run["probs"]),
                                                  crystal_probability(base["probs"]))
        emit({"figure": "crystalnet_pair", "a": run["name"], "b": base["name"], "p": test.p_value,
              "only_a_right": int((other & ~right).sum()), "only_b_right": int((right & ~other).sum()),
              "crystal_auc_a_minus_b": round(diff, 4), "crystal_auc_a_minus_b_ci95": [round(low, 4), round(high, 4)]},
             sink)


def parse_variants(values: list[str]) -> list[tuple[str, dict]]:
    """``name:k=v,k=v`` -> (name, overrides); no value: the preset as it is."""
    out = []
    for text in values or ["preset:"]:
        name, _, rest = text.partition(":")
        pairs = dict(p.split("=", 1) for p in rest.split(",") if p)
        out.append((name, pairs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--plates", type=int, default=12)
    parser.add_argument("--difficulty", type=float, default=None, help="default: the generator's")
    parser.add_argument("--archive-seed", type=int, default=0)
    parser.add_argument("--imager", default=DEMO_IMAGER, help="HWI (default: the twin of the paper's data), A or B")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--variant", action="append", help="name:key=value,... (repeatable)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tensors", type=Path, help="prepared tensors (skips archive, ingest, baselines)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--choose-on", type=Path, default=None,
                        help="another archive's tensors (r<res> folder): every model is scored on all its splits "
                             "too, a larger validation set to choose a recipe on (the test split only reports)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="steps 1-3 only (archive, ingest, tensors at the preset's resolution and 128 px), timed")
    args = parser.parse_args()
    # progress on stderr (a plate written, a split's tensors), the figures stay JSON on stdout
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")

    from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY
    from crystal_pipeline.training import TrainConfig

    sink: list = []
    started = time.perf_counter()
    emit({"figure": "machine", "cpu": cpu_name(), "cores": os.cpu_count(), "load": os.getloadavg()[0],
          "device": args.device}, sink)
    args.workdir.mkdir(parents=True, exist_ok=True)
    variants = parse_variants(args.variant)
    runs = []
    for name, overrides in variants:
        resolution = TrainConfig.from_preset(args.preset, overrides).resolution
        if args.tensors is not None:
            tensors_dir = args.tensors
        else:
            build_archive(args.workdir, args.plates, args.difficulty if args.difficulty is not None
                          else DEFAULT_DIFFICULTY, args.archive_seed, sink, args.imager)
            ingest(args.workdir, sink)
            tensors_dir = prepared_tensors(args.workdir, resolution, sink)
        if args.prepare_only:
            prepared_tensors(args.workdir, 128, sink)
            continue
        for seed in (int(s) for s in args.seeds.split(",") if s.strip()):  # --seeds "": baselines only
            runs.append(run_crystalnet(tensors_dir, args.workdir / "regime_models", name, args.preset, overrides,
                                       seed, args.device, sink, args.choose_on))
    compare_variants(runs, sink)
    if args.tensors is None and not args.no_baselines and not args.prepare_only:
        run_baselines(prepared_tensors(args.workdir, 128, sink), args.workdir, runs, sink)
    emit({"figure": "total", "seconds": round(time.perf_counter() - started, 1)}, sink)
    (args.workdir / "regime.json").write_text(json.dumps(sink, indent=1, default=_plain))


if __name__ == "__main__":
    main()
