"""The drop locator against the generator's drops, and what ``preprocessing.crop: drop`` does to crystal AUC.

Two figures (one JSON line each, after ``machine``):

- ``iou`` per imager (A, B, HWI at their default sizes): ``--drops`` pictures drawn with
  their drop ellipse in memory (``synthetic.drawn_drop``; classes uniform, difficulty 0.5),
  IoU of the located ellipse with the drawn one: median, 10th percentile, share found (not
  the central fallback), which rule found it, milliseconds per picture on one thread.
- ``auc``: one archive of ``--imager`` (default B: small drops anywhere in the well, what
  the central square wastes most pixels on), its consensus labels and well-keyed split as
  the pipeline makes them; tensors at 64 px cut ``centre`` and ``drop``; the demo preset
  for ``--updates`` updates on each, the same seed; crystal AUC on the same test images with
  seeded 95% bootstrap intervals, and the paired difference (drop - centre) resampled over
  those images together.

    nice -n 10 .venv/bin/python bench/drop_locator.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune import RES, emit, labelled_lab, timed_train, write_tensors  # noqa: E402  (bench/finetune.py)
from machine import cpu_name  # noqa: E402  (bench/machine.py)


def iou_figure(name: str, drops: int, seed: int) -> dict:
    from crystal_pipeline.ingest.drop_locator import ellipse_mask, locate_drop
    from crystal_pipeline.synthetic.drawn_drop import draw_drop_picture
    from crystal_pipeline.synthetic.imager import imager_named

    imager = imager_named(name)
    rng = np.random.default_rng([seed, ord(name[0])])
    ious, methods, seconds = [], Counter(), 0.0
    for i in range(drops):
        drawn = draw_drop_picture(rng, 1 + i % 10, imager.default_size, imager)
        started = time.perf_counter()
        found = locate_drop(drawn.image)
        seconds += time.perf_counter() - started
        mask = ellipse_mask(drawn.image.shape, found.cx, found.cy, found.a, found.b, found.angle)
        truth = drawn.mask()
        ious.append(float((mask & truth).sum() / (mask | truth).sum()))
        methods[found.method] += 1
    ious = np.array(ious)
    return emit("iou", imager=name, size=imager.default_size, drops=drops, median=round(float(np.median(ious)), 4),
                p10=round(float(np.percentile(ious, 10)), 4), mean=round(float(ious.mean()), 4),
                share_at_least_0_9=round(float((ious >= 0.9).mean()), 4),
                found_share=round(1 - methods["fallback"] / drops, 4), methods=dict(methods),
                ms_per_picture=round(1000 * seconds / drops, 1))


def auc_figure(args, work: Path) -> None:
    import torch

    from crystal_pipeline.evaluation.metrics import binary_auc, crystal_probability, crystal_truth
    from crystal_pipeline.evaluation.uncertainty import bootstrap_ci, paired_auc_difference
    from crystal_pipeline.model import load, predict_proba
    from crystal_pipeline.synthetic import write_archive
    from crystal_pipeline.training import TrainConfig

    torch.set_num_threads(args.threads)
    raw = work / "raw"
    if not (raw / "plates").is_dir():
        write_archive(raw, plates=args.plates, seed=args.seed, size=args.size, workers=args.threads,
                      imager=args.imager, plate_prefix="DL")
    probs, truth = {}, None
    for crop in ("centre", "drop"):
        started = time.perf_counter()
        lab = labelled_lab(raw, args.threads, crop)
        decode_s = time.perf_counter() - started
        config = TrainConfig.from_preset("demo", {"num_threads": args.threads, "resolution": RES,
                                                  "updates": args.updates, "seed": args.seed})
        model, wall, cpu = timed_train(config, write_tensors(work / f"t_{crop}", lab["train"], lab["val"]),
                                       work / f"{crop}.pt")
        ids, class_ids, pixels = lab["test"]
        probs[crop] = crystal_probability(predict_proba(load(model, "cpu"), pixels))
        truth = crystal_truth(class_ids)
        emit("auc", crop=crop, imager=args.imager, train=len(lab["train"][0]), test=len(ids),
             test_crystal=int(truth.sum()), updates=config.updates, decode_s=round(decode_s, 1),
             train_wall_min=round(wall, 2), train_cpu_min=round(cpu, 2),
             crystal_auc=round(binary_auc(truth, probs[crop]), 4),
             crystal_auc_ci95=[round(x, 4) for x in bootstrap_ci(binary_auc, truth, probs[crop], seed=0)])
    diff, interval = paired_auc_difference(truth, probs["drop"], probs["centre"], seed=0)
    emit("auc_paired", imager=args.imager, drop_minus_centre=round(diff, 4), ci95=[round(x, 4) for x in interval])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=300, help="drawn pictures per imager (default 300)")
    parser.add_argument("--imager", default="B", help="the imager of the AUC archive (default B)")
    parser.add_argument("--plates", type=int, default=1, help="1,536-well plates of that archive (default 1)")
    parser.add_argument("--size", type=int, default=128, help="its rendered rows (decoded to 64 px)")
    parser.add_argument("--updates", type=int, default=300, help="demo-preset updates per model (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-auc", action="store_true", help="only the IoU figures")
    parser.add_argument("--work", default=None, help="working folder (default: a temp dir)")
    args = parser.parse_args()
    emit("machine", cpu=cpu_name(), cores=os.cpu_count(), threads=args.threads, loadavg_1m=os.getloadavg()[0],
         python=platform.python_version())
    for name in ("A", "B", "HWI"):
        iou_figure(name, args.drops, args.seed)
    if not args.skip_auc:
        auc_figure(args, Path(args.work or tempfile.mkdtemp(prefix="drop_locator_bench_")))


if __name__ == "__main__":
    main()
