"""Which 100 or 300 lab-B labels teach a lab-A model most: the review order against random.

Issue 20 item 6's benchmark (smoke size by default; ``--plates-b 3 --ft-updates 150`` is the
size the issue asks for) (library calls only, like
``bench/finetune.py``, whose helpers it uses): a lab-A model (imager A, demo preset,
``--a-updates``) is fine-tuned (``finetune`` preset, ``--ft-updates``) on N lab-B labels
(imager B) chosen from lab B's train split either by ``plates.review_order.teaching_order``
(from the lab-A model's probabilities on those images, temperature-calibrated on lab A's
val split, crystal threshold 0.5) or at random; three seeds, paired (seed s: the same
fine-tune seed for both, the random draw's seed). Crystal AUC on lab B's test split.

    nice -n 10 .venv/bin/python bench/review_order_finetune.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune import RES, emit, labelled_lab, timed_train, write_tensors  # noqa: E402  (bench/finetune.py)
from machine import cpu_name  # noqa: E402  (bench/machine.py)


def pool_rows(image_ids, probs):
    """The lab-B train images as a plate's labelled rows (well from the image id)."""
    from crystal_pipeline.classes import CLASS_NAMES
    from crystal_pipeline.evaluation.metrics import crystal_probability
    from crystal_pipeline.plates.labelling import LabelledImage

    crystal = crystal_probability(probs)
    return [LabelledImage(i, i.split("/")[-1].split("_")[0], Path(i), int(p.argmax()) + 1, CLASS_NAMES[int(p.argmax())],
                          float(c), tuple(p.tolist())) for i, p, c in zip(image_ids, probs, crystal)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", default="100,300")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--a-updates", type=int, default=300)
    parser.add_argument("--ft-updates", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None)
    parser.add_argument("--orders", default="review,random",
                        help="arms: review, random, and stratified (a random draw with the review order's count "
                             "of crystal-positive labels: separates the order's class balance from its uncertainty)")
    parser.add_argument("--plates-b", type=int, default=1,
                        help="lab B's plates of 1536 wells (pool and test split grow with it; issue 20 item 6 asks 3+)")
    args = parser.parse_args()

    import torch

    from crystal_pipeline.evaluation.calibration import apply_temperature, fit_temperature
    from crystal_pipeline.evaluation.metrics import binary_auc, crystal_probability, crystal_truth
    from crystal_pipeline.model import load, predict_proba
    from crystal_pipeline.plates.review_order import teaching_order
    from crystal_pipeline.synthetic import write_archive
    from crystal_pipeline.training import TrainConfig

    torch.set_num_threads(args.threads)
    emit("machine", cpu=cpu_name(), cores=os.cpu_count(), threads=args.threads, loadavg_1m=os.getloadavg()[0],
         python=platform.python_version())
    work = Path(args.work or tempfile.mkdtemp(prefix="review_order_bench_"))
    labs = {}
    for lab, seed in (("A", 0), ("B", 1)):
        raw = work / f"lab_{lab}" / "raw"
        if not (raw / "plates").is_dir():
            write_archive(raw, plates=args.plates_b if lab == "B" else 1, seed=seed, size=args.size, workers=args.threads, imager=lab,
                          plate_prefix=f"RO{lab}")
        labs[lab] = labelled_lab(raw, args.threads)
        emit("data", lab=lab, **{s: len(v[0]) for s, v in labs[lab].items()})
    a, b = labs["A"], labs["B"]
    a_config = TrainConfig.from_preset("demo", {"num_threads": args.threads, "resolution": RES, "updates": args.a_updates})
    a_model, _, a_cpu = timed_train(a_config, write_tensors(work / "t_a", a["train"], a["val"]), work / "lab_a.pt")
    model = load(a_model, "cpu")
    temperature = fit_temperature(predict_proba(model, a["val"][2]), a["val"][1] - 1)
    pool_ids, pool_classes, pool_pixels = b["train"]
    rows = pool_rows(pool_ids, apply_temperature(predict_proba(model, pool_pixels), temperature))
    position = {r.image_id: i for i, r in enumerate(rows)}
    taught = [position[r.image_id] for r in teaching_order(rows, 0.5)]
    truth = crystal_truth(b["test"][1])
    emit("lab_a", updates=a_config.updates, cpu_min=round(a_cpu, 2), temperature=round(temperature, 3),
         lab_b_test_auc_as_is=round(binary_auc(truth, crystal_probability(predict_proba(model, b["test"][2]))), 4))
    positive = crystal_truth(pool_classes)

    def choose(order: str, n: int, seed: int) -> np.ndarray:
        """Pool rows for ``n`` labels: the review order's first n, a random n, or a random n with
        as many crystal-positive labels as the review order's first n (stratified)."""
        rng = np.random.default_rng(seed)
        if order == "review":
            return np.asarray(taught[:n])
        if order == "random":
            return rng.permutation(len(rows))[:n]
        if order == "stratified":
            k = int(positive[taught[:n]].sum())
            return np.concatenate([rng.permutation(np.flatnonzero(positive))[:k],
                                   rng.permutation(np.flatnonzero(~positive))[:n - k]])
        raise SystemExit(f"unknown order {order!r}")

    results = {}
    for n in (int(x) for x in args.labels.split(",")):
        for seed in range(args.seeds):
            for order in args.orders.split(","):
                chosen = np.sort(choose(order, n, seed))
                subset = ([pool_ids[i] for i in chosen], pool_classes[chosen], pool_pixels[chosen])
                config = TrainConfig.from_preset("finetune", {"num_threads": args.threads, "resolution": RES, "init_from": "lab-A",
                                                              "updates": args.ft_updates, "seed": seed})
                out, wall, cpu = timed_train(config, write_tensors(work / f"t_{order}{n}_{seed}", subset, b["val"]),
                                             work / f"{order}{n}_{seed}.pt", init_artifact=a_model)
                auc = binary_auc(truth, crystal_probability(predict_proba(load(out, "cpu"), b["test"][2])))
                results[(order, n, seed)] = auc
                emit("finetune", order=order, labels=n, seed=seed, crystal_positive_labels=int(crystal_truth(subset[1]).sum()),
                     crystal_auc=round(auc, 4), cpu_min=round(cpu, 2))
    sizes = sorted({n for _, n, _ in results})
    orders = args.orders.split(",")
    mean = {(o, n): float(np.mean([results[(o, n, s)] for s in range(args.seeds)])) for o in orders for n in sizes}
    for other in (o for o in orders if o != "review" and "review" in orders):
        for n in sizes:
            diffs = [results[("review", n, s)] - results[(other, n, s)] for s in range(args.seeds)]
            emit("paired", labels=n, against=other, review_mean=round(mean[("review", n)], 4),
                 other_mean=round(mean[(other, n)], 4), review_minus_other=[round(d, 4) for d in diffs],
                 mean_difference=round(float(np.mean(diffs)), 4))
    if "review" in orders and "random" in orders:
        target = mean[("random", sizes[-1])]
        reached = [n for n in sizes if mean[("review", n)] >= target]
        emit("labels_to_reach_random", random_labels=sizes[-1], random_auc=round(target, 4),
             review_labels_needed=reached[0] if reached else f"more than {sizes[-1]}")

if __name__ == "__main__":
    main()
