"""Does fine-tuning pay? A lab-A model on lab-B images, as is, fine-tuned, and lab B from scratch.

Lab A and lab B are synthetic archives photographed by two imagers
(``crystal_pipeline.synthetic.imager``: B is dimmer, flatter, blurrier, noisier, with
smaller drops and a thick pale rim). Labels are the archives' unanimous consensus and
their well-keyed train/val/test split, exactly as the pipeline makes them
(``ingest.annotations`` + ``ingest.consensus``). Steps, all library calls, no Dagster:

1. lab A: train the lab-A model (``--a-preset``, default ``demo``) on lab A's train split;
2. lab B: the first N images of a seeded shuffle of lab B's train split, for each N in
   ``--labels`` (nested: the 300 hold the 100);
3. per N: fine-tune the lab-A model (preset ``finetune``, ``init_from``) and train from
   scratch (``--scratch-preset``, default ``demo``) on the same N labels, lab B's val
   split as the trainer's validation;
4. score every model on lab B's test split: accuracy, balanced accuracy and crystal AUC,
   each with its seeded 95% bootstrap interval (``evaluation.results.classifier_scores``).

Figures (one JSON line each): ``machine``; ``data`` (labelled images per lab and split);
``model`` per model: scores on lab-B test, and for trained ones wall and CPU minutes
(process CPU time over all threads) with ``--threads`` threads. A plot goes to ``--plot``.

    .venv/bin/python bench/finetune.py --threads 2 --plot docs/images/finetune_lab_b.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_name  # noqa: E402  (bench/machine.py)

RES = 64  # the demo and finetune presets' resolution


def emit(figure: str, **values) -> dict:
    line = {"figure": figure, **values}
    print(json.dumps(line), flush=True)
    return line


def labelled_lab(raw: Path, workers: int, crop: str = "centre") -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """split -> (image ids, class ids 1..10, uint8 pixels at RES, cut as ``crop`` says) from an archive's files."""
    from crystal_pipeline.ingest import annotations, archive, consensus, imaging

    files = [f for f in archive.scan_archive(raw) if f.error is None]
    formats = {f.plate_key: f.plate_format for f in files}
    table = annotations.read_annotations(archive.annotation_files(raw), formats, {f.image_id for f in files})
    result = consensus.agree((a.image_id, a.attributes) for a in table.annotations)
    path_of = {f.image_id: f.path for f in files}
    labels = sorted(result.labels, key=lambda label: label.image_id)
    pixels = np.empty((len(labels), RES, RES), np.uint8)
    for index, decoded in imaging.decode_many([path_of[l.image_id] for l in labels], RES, workers=workers, crop=crop):
        pixels[index] = decoded
    out = {}
    for split in ("train", "val", "test"):
        rows = [i for i, label in enumerate(labels) if label.split == split]
        out[split] = ([labels[i].image_id for i in rows], np.array([labels[i].class_id for i in rows]), pixels[rows])
    return out


def write_tensors(folder: Path, train, val) -> Path:
    """A tensors folder (train, val, stats of train) in the pipeline's format."""
    from crystal_pipeline import tensors

    target = folder / "tensors" / f"r{RES}"
    tensors.write_split(target, "train", *train)
    tensors.write_split(target, "val", *val)
    tensors.save_stats(target / tensors.STATS_FILE, *tensors.compute_stats(target / "train"))
    return folder


def timed_train(config, tensors_dir: Path, out: Path, **kwargs) -> tuple[Path, float, float]:
    """Train; (artifact, wall minutes, CPU minutes of this process over all its threads)."""
    from crystal_pipeline.training import train

    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = train(config, tensors_dir, out, device="cpu", trained_on="synthetic", **kwargs)
    assert result.finished
    return out, (time.perf_counter() - wall0) / 60, (time.process_time() - cpu0) / 60


def score(model_path: Path, test) -> dict:
    from crystal_pipeline.evaluation.results import classifier_scores
    from crystal_pipeline.model import load, predict_proba

    _, class_ids, pixels = test
    scores = classifier_scores(predict_proba(load(model_path, "cpu"), pixels), class_ids)
    keys = ("n_images", "accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95",
            "crystal_auc", "crystal_auc_ci95")
    return {k: (np.round(scores[k], 4).tolist() if k != "n_images" else scores[k]) for k in keys}


def plot(lines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=110)
    models = [l for l in lines if l["figure"] == "model" and l["lab"] == "B"]
    unadapted = next(l for l in models if l["model"] == "lab A as is")
    for ax, metric, title in zip(axes, ("crystal_auc", "balanced_accuracy", "accuracy"),
                                 ("crystal AUC", "balanced accuracy", "accuracy")):
        for kind, colour in (("fine-tuned from lab A", "tab:blue"), ("from scratch", "tab:orange")):
            rows = sorted((l for l in models if l["model"] == kind), key=lambda l: l["labels"])
            if not rows:
                continue
            x = [l["labels"] for l in rows]
            y = np.array([l[metric] for l in rows])
            ci = np.array([l[metric + "_ci95"] for l in rows])
            ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], marker="o", capsize=3, label=kind, color=colour)
        ax.axhline(unadapted[metric], color="grey", ls="--", label="lab A model as is")
        ax.axhspan(*unadapted[metric + "_ci95"], color="grey", alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("lab-B labels")
        ax.set_title(f"{title} on lab-B test (95% CI)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plates-a", type=int, default=2, help="1,536-well plates of lab A (default 2)")
    parser.add_argument("--plates-b", type=int, default=3, help="1,536-well plates of lab B (default 3)")
    parser.add_argument("--size", type=int, default=128, help="rendered image side (decoded to 64 px)")
    parser.add_argument("--labels", default="100,300,1000", help="lab-B label counts")
    parser.add_argument("--a-preset", default="demo", help="preset of the lab-A model")
    parser.add_argument("--scratch-preset", default="demo", help="preset of the from-scratch lab-B models")
    parser.add_argument("--a-model", default=None,
                        help="reuse this lab-A model (an earlier run's lab_a.pt under --work) instead of training it")
    parser.add_argument("--a-updates", type=int, default=None, help="updates of the lab-A model (default: its preset's)")
    parser.add_argument("--scratch-updates", type=int, default=None,
                        help="updates from scratch (default: the preset's; the fine-tune's for an equal budget)")
    parser.add_argument("--set", dest="finetune_set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a finetune-preset field (e.g. freeze_features=true)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="working folder (default: a temp dir)")
    parser.add_argument("--plot", default=None, help="PNG path for the plot")
    args = parser.parse_args()

    import torch

    from crystal_pipeline.cli.train import parse_overrides
    from crystal_pipeline.synthetic import write_archive
    from crystal_pipeline.training import TrainConfig

    torch.set_num_threads(args.threads)
    emit("machine", cpu=cpu_name(), cores=os.cpu_count(), threads=args.threads, loadavg_1m=os.getloadavg()[0],
         python=platform.python_version(), torch=torch.__version__)
    work = Path(args.work or tempfile.mkdtemp(prefix="finetune_bench_"))
    labs = {}
    for lab, seed, plates in (("A", 0, args.plates_a), ("B", 1, args.plates_b)):
        raw = work / f"lab_{lab}" / "raw"
        if not (raw / "plates").is_dir():
            write_archive(raw, plates=plates, seed=seed, size=args.size, workers=args.threads, imager=lab,
                          plate_prefix=f"LB{lab}")
        labs[lab] = labelled_lab(raw, args.threads)
        emit("data", lab=lab, imager=lab, plates=plates, **{s: len(v[0]) for s, v in labs[lab].items()})

    a, b = labs["A"], labs["B"]
    lines = []
    a_config = TrainConfig.from_preset(args.a_preset, {"num_threads": args.threads, "resolution": RES,
                                                       **({"updates": args.a_updates} if args.a_updates else {})})
    if args.a_model:  # timed in the run that trained it
        a_model, wall, cpu = Path(args.a_model), None, None
    else:
        a_model, wall, cpu = timed_train(a_config, write_tensors(work / "t_a", a["train"], a["val"]), work / "lab_a.pt")
    lines.append(emit("model", lab="A", model="lab A", labels=len(a["train"][0]), preset=args.a_preset,
                      updates=a_config.updates, reused=bool(args.a_model),
                      wall_min=wall and round(wall, 2), cpu_min=cpu and round(cpu, 2), **score(a_model, a["test"])))
    lines.append(emit("model", lab="B", model="lab A as is", labels=0, **score(a_model, b["test"])))

    order = np.random.default_rng(0).permutation(len(b["train"][0]))
    scratch_overrides = {"num_threads": args.threads, "resolution": RES,
                         **({"updates": args.scratch_updates} if args.scratch_updates else {})}
    finetune_overrides = {"num_threads": args.threads, "resolution": RES, "init_from": "lab-A", **parse_overrides(args.finetune_set)}
    for n in (int(x) for x in args.labels.split(",")):
        if n > len(order):
            emit("skipped", labels=n, reason=f"lab B has only {len(order)} training labels")
            continue
        rows = np.sort(order[:n])
        subset = tuple([v[i] for i in rows] if isinstance(v, list) else v[rows] for v in b["train"])
        tensors_dir = write_tensors(work / f"t_b{n}", subset, b["val"])
        runs = {"fine-tuned from lab A": (TrainConfig.from_preset("finetune", finetune_overrides), a_model),
                "from scratch": (TrainConfig.from_preset(args.scratch_preset, scratch_overrides), None)}
        for kind, (config, parent) in runs.items():
            out = work / f"b{n}_{'ft' if parent else 'scratch'}.pt"
            model, wall, cpu = timed_train(config, tensors_dir, out, init_artifact=parent)
            lines.append(emit("model", lab="B", model=kind, labels=n, preset=config.preset,
                              updates=config.updates, freeze_features=config.freeze_features,
                              wall_min=round(wall, 2), cpu_min=round(cpu, 2), **score(model, b["test"])))
    if args.plot:
        plot(lines, Path(args.plot))
        emit("plot", path=args.plot)


if __name__ == "__main__":
    main()
