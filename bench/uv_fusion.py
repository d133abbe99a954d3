"""Visible-only, UV-only and fused (visible + UV) CrystalNets on the same test wells of a UV archive.

Issue 20 item 3. Draws a small UV archive in memory (the generator's own streams, as
``demo-archive --uv`` writes it: ``render_pool.draw_well_pictures``), labels each well with its
latent class (the experts' rule: a salt-only drop is not crystal), splits the wells 60/15/25
(train/val/test, seeded), trains three CrystalNets with one small recipe (visible channel,
UV channel, both stacked: ``CrystalNet(in_channels=2)``), and compares on the test wells:

- crystal AUC with a 95% bootstrap interval, for each model and for AXIS's rule
  (``fusion.axis_rule``: the larger crystal score of the visible and UV models);
- at each model's hit threshold (95% crystal recall on val, the project's rule): recall on
  precipitate & crystal wells, and false hits among salt wells without crystal;
- McNemar (exact) between fused and visible, and fused and AXIS, on hit correctness.

The training loop here is a plain seeded SGD loop on in-memory tensors (the pipeline's loop
reads Parquet tensors of one channel); the recipe is the smoke preset's (lr 0.01, 32 px) with
60 updates of 32: about 6 minutes on a shared 2-core box, far too little training to rank the
models (docs/benchmarks.md); raise ``--updates`` and ``--wells`` where the time is there. Run niced:  nice -n 10 .venv/bin/python bench/uv_fusion.py  (prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402  bench/machine.py


def draw(wells: int, seed: int, imager_name: str, resolution: int, plates: int):
    """(visible, uv, class ids, salt) of ``wells`` wells per plate, pictures at ``resolution``."""
    from PIL import Image

    from crystal_pipeline.ingest.imaging import _crop_resize
    from crystal_pipeline.synthetic.archive import plate_classes
    from crystal_pipeline.synthetic.class_mix import normalize_mix
    from crystal_pipeline.synthetic.hwi import plate_lighting
    from crystal_pipeline.synthetic.imager import imager_named
    from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY
    from crystal_pipeline.synthetic.render_pool import draw_well_pictures, plate_key

    imager = imager_named(imager_name)
    vis, uvs, classes, salt = [], [], [], []
    square = lambda a: np.asarray(_crop_resize(Image.fromarray(a), resolution))  # noqa: E731
    for p in range(plates):
        plate_id = f"UVB{p + 1:03d}"
        key = plate_key(plate_id)
        lighting = plate_lighting(seed, key, imager)
        ids = plate_classes(plate_id, seed, 1536, normalize_mix(None, imager.name), imager.name)[:wells]
        for index, class_id in enumerate(ids):
            v, u, truth, _ = draw_well_pictures(seed, key, index, int(class_id), imager.default_size,
                                                DEFAULT_DIFFICULTY, imager, lighting, None, uv=True)
            vis.append(square(v))
            uvs.append(square(u))
            classes.append(int(class_id))
            salt.append(truth.salt > 0)
    return np.stack(vis), np.stack(uvs), np.array(classes), np.array(salt)


def train(pixels: np.ndarray, class_ids: np.ndarray, resolution: int, updates: int, batch: int, seed: int,
          precision: str = "fp32"):
    """A CrystalNet on (N, C, res, res) uint8 pixels: seeded SGD, momentum 0.9, lr 0.01, in
    ``precision`` (bf16 autocast, the pipeline's own ``autocast_context``, or fp32)."""
    import torch
    import torch.nn.functional as F

    from crystal_pipeline.model.fusion import channel_stats
    from crystal_pipeline.model.network import CrystalNet
    from crystal_pipeline.model.precision import autocast_context

    torch.manual_seed(seed)
    model = CrystalNet(resolution=resolution, in_channels=pixels.shape[1])
    mean, std = channel_stats(pixels)
    model.set_normalization(mean[0] if pixels.shape[1] == 1 else mean, std[0] if pixels.shape[1] == 1 else std)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.from_numpy(pixels), torch.from_numpy(class_ids - 1)
    rng = np.random.default_rng(seed)
    model.train()
    started = time.perf_counter()
    for update in range(updates):
        if update and update % 100 == 0:  # progress on stderr: a run at size is an hour on a shared box
            print(f"  {pixels.shape[1]} channel(s): update {update}/{updates}, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
        rows = torch.from_numpy(rng.integers(0, len(x), batch))
        with autocast_context(torch.device("cpu"), precision):
            logits = model(x[rows])
        loss = F.cross_entropy(logits.float(), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def crystal_scores(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    from crystal_pipeline.evaluation.metrics import crystal_probability
    from crystal_pipeline.model.inference import softmax_probs

    with torch.no_grad():
        probs = np.concatenate([softmax_probs(model(torch.from_numpy(pixels[i:i + 256]))).numpy()
                                for i in range(0, len(pixels), 256)])
    return crystal_probability(probs)


def main() -> None:
    import torch

    from crystal_pipeline.evaluation.metrics import binary_auc, crystal_truth, threshold_for_recall
    from crystal_pipeline.evaluation.uncertainty import bootstrap_ci, mcnemar, paired_auc_difference
    from crystal_pipeline.model.fusion import axis_rule, stack_pictures
    from crystal_pipeline.model.precision import PRECISIONS, choose_precision
    from crystal_pipeline.synthetic.imager import DEMO_IMAGER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=512, help="wells per plate")
    parser.add_argument("--plates", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imager", default=DEMO_IMAGER)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="training arithmetic; auto: bf16 where the CPU has bf16 units (model.precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = choose_precision(args.precision, "cpu")
    started = time.perf_counter()
    print(f"drawing {args.plates} x {args.wells} wells with UV ...", file=sys.stderr, flush=True)
    vis, uv, classes, salt = draw(args.wells, args.seed, args.imager, args.resolution, args.plates)
    drawn_s = time.perf_counter() - started
    side = np.random.default_rng(args.seed + 1).random(len(classes))
    train_rows, val_rows, test_rows = side < 0.6, (side >= 0.6) & (side < 0.75), side >= 0.75
    inputs = {"visible": vis[:, None], "uv": uv[:, None], "fused": stack_pictures(vis, uv)}
    truth = crystal_truth(classes)
    scores, train_s = {}, {}
    for name, pixels in inputs.items():
        t = time.perf_counter()
        model = train(pixels[train_rows], classes[train_rows], args.resolution, args.updates, args.batch, args.seed,
                      precision.precision)
        train_s[name] = round(time.perf_counter() - t, 1)
        scores[name] = crystal_scores(model, pixels)
    scores["axis_max"] = axis_rule(scores["visible"], scores["uv"])
    test_truth = truth[test_rows]
    salt_only = test_rows & salt & ~truth
    prec_crystal = test_rows & (classes == 5)
    result = {"bench": "uv_fusion", "cpu": cpu_name(), "threads": args.threads, "args": vars(args),
              "wells": {"train": int(train_rows.sum()), "val": int(val_rows.sum()), "test": int(test_rows.sum()),
                        "test_crystal": int(test_truth.sum()), "test_salt_no_crystal": int(salt_only.sum()),
                        "test_no_salt_no_crystal": int((test_rows & ~salt & ~truth).sum()),
                        "test_precipitate_crystal": int(prec_crystal.sum())},
              "precision": precision.precision, "draw_s": round(drawn_s, 1), "train_s": train_s, "models": {}}
    hits = {}
    for name, s in scores.items():
        threshold = threshold_for_recall(truth[val_rows], s[val_rows], 0.95)
        hit = s >= threshold
        hits[name] = hit
        auc = binary_auc(test_truth, s[test_rows])
        lo, hi = bootstrap_ci(binary_auc, test_truth, s[test_rows], n_resamples=500, seed=args.seed)
        result["models"][name] = {
            "crystal_auc": round(auc, 3), "auc_ci": [round(lo, 3), round(hi, 3)],
            "threshold": round(float(threshold), 4),
            "test_crystal_recall": round(float(hit[test_rows & truth].mean()), 3),
            "precipitate_crystal_recall": round(float(hit[prec_crystal].mean()), 3) if prec_crystal.any() else None,
            "salt_false_hits": int(hit[salt_only].sum()),
            "salt_false_hit_rate": round(float(hit[salt_only].mean()), 3) if salt_only.any() else None,
            "other_false_hit_rate": round(float(hit[test_rows & ~salt & ~truth].mean()), 3),
        }
    for other in ("visible", "axis_max", "uv"):
        # Paired: the same resampled test wells score both models, so the interval is of the difference.
        diff, (lo, hi) = paired_auc_difference(test_truth, scores["fused"][test_rows], scores[other][test_rows],
                                               n_resamples=1000, seed=args.seed)
        result[f"auc_fused_minus_{other}"] = {"diff": round(diff, 3), "ci95_paired": [round(lo, 3), round(hi, 3)]}
    for other in ("visible", "axis_max"):
        right_f = hits["fused"][test_rows] == test_truth
        right_o = hits[other][test_rows] == test_truth
        test = mcnemar(right_f, right_o)
        result[f"mcnemar_fused_vs_{other}"] = {"only_fused_right": test.only_a_right,
                                               f"only_{other}_right": test.only_b_right,
                                               "p": round(test.p_value, 5)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
