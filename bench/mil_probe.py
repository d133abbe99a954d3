"""Probe (issue 20 item 4): does a multiple-instance crystal head point at crystals where Grad-CAM does not?

Trains the demo recipe with an extra 1x1 convolution on conv3's activations whose
log-sum-exp over the map is trained, beside the 10-class loss, to say whether the picture
has a crystal (image labels only); then the pointing game on the test split's has-crystal
pictures for that map's peak, beside the same model's Grad-CAM and the drop centre.

    nice -n 10 python bench/mil_probe.py --data data --weight 1.0
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from crystal_position import geometry, picture_path, picture_sizes, read_truth  # noqa: E402

from crystal_pipeline import tensors  # noqa: E402
from crystal_pipeline.classes import CRYSTAL_CLASS_IDS  # noqa: E402
from crystal_pipeline.evaluation.metrics import binary_auc  # noqa: E402
from crystal_pipeline.evaluation.uncertainty import bootstrap_mean_ci  # noqa: E402
from crystal_pipeline.model import augment, cam  # noqa: E402
from crystal_pipeline.model.network import CrystalNet  # noqa: E402
from crystal_pipeline.model.precision import autocast_context  # noqa: E402
from crystal_pipeline.training.config import TrainConfig  # noqa: E402
from crystal_pipeline.training.steps import (BatchPlan, crystal_auc, evaluate, lr_at, make_optimizer,  # noqa: E402
                                             training_precision)


class MilNet(CrystalNet):
    """CrystalNet plus a 1x1 convolution on conv3's activations (the MIL map). ``forward`` is
    CrystalNet's own; :meth:`both` reads conv3's output through a forward hook, as
    ``model.cam`` does, so the network's layers are not written twice."""

    def __init__(self, *a, sharpness: float = 5.0, **kw):
        super().__init__(*a, **kw)
        self.crystal_map = nn.Conv2d(128, 1, 1)
        self.sharpness = sharpness

    def both(self, images, theta=None):
        """(logits, MIL map (N, h, w)) of one forward pass."""
        captured = []
        handle = self.conv3.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self(images, theta)
        finally:
            handle.remove()
        return logits, self.crystal_map(F.relu(captured[0]))[:, 0]

    def pooled(self, m):
        r = self.sharpness
        flat = m.float().flatten(1)
        return (torch.logsumexp(r * flat, 1) - np.log(flat.shape[1])) / r


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--sharpness", type=float, default=5.0)
    p.add_argument("--updates", type=int, default=900)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64, help="the tensors' r<res> to train on (64: the demo's)")
    p.add_argument("--save", type=Path, default=None, help="write the trained weights here (torch.save)")
    p.add_argument("--load", type=Path, default=None, help="score weights --save wrote instead of training")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    config = TrainConfig.from_preset("demo", {"updates": args.updates, "seed": args.seed,
                                              "resolution": args.resolution})
    res = config.resolution
    tdir = args.data / "tensors" / f"r{res}"
    train, val, test = (tensors.read_split(tdir / s) for s in ("train", "val", "test"))
    mean, std = tensors.load_stats(tdir / "stats.npz")
    device = torch.device("cpu")
    torch.manual_seed(config.seed)
    net = MilNet(resolution=res, augment_params=config.augment_params(), sharpness=args.sharpness)
    from crystal_pipeline.model import init_weights
    init_weights(net, config.init)
    net.set_normalization(mean, std)
    opt = make_optimizer(net, config)
    plan = BatchPlan(len(train), config, device, targets=train.class_ids - 1)
    precision = training_precision(config, device)
    x_all = torch.from_numpy(train.pixels)
    y_all = torch.from_numpy(train.class_ids - 1)
    has_all = torch.from_numpy(np.isin(train.class_ids, sorted(CRYSTAL_CLASS_IDS)).astype(np.float32))
    t0 = time.perf_counter()
    net.train()
    for u in range(0 if args.load else config.updates):
        for g in opt.param_groups:
            g["lr"] = lr_at(config, u)
        idx = plan.indices(u)
        with autocast_context(device, precision.precision):
            logits, m = net.both(x_all[idx], plan.theta(u))
        loss = F.cross_entropy(logits.float(), y_all[idx])
        if args.weight:
            loss = loss + args.weight * F.binary_cross_entropy_with_logits(net.pooled(m), has_all[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if u % 100 == 0:
            print(f"update {u} loss {float(loss):.3f} {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    train_s = time.perf_counter() - t0
    if args.load:
        net.load_state_dict(torch.load(args.load)["state"])
    net.eval()
    out = {"bench": "mil_probe", "machine": machine.describe(), "weight": args.weight, "sharpness": args.sharpness,
           "updates": config.updates, "seed": config.seed, "precision": precision.precision,
           "train_s": round(train_s, 1)}
    for name, split in (("val", val), ("test", test)):
        ev = evaluate(net, torch.from_numpy(split.pixels), torch.from_numpy(split.class_ids - 1), 256, keep_probs=True)
        out[f"{name}_acc"] = round(ev.accuracy, 4)
        out[f"{name}_crystal_auc"] = round(crystal_auc(split.class_ids, ev.probs), 4)
        with torch.no_grad():
            mil = torch.cat([net.pooled(net.both(torch.from_numpy(split.pixels[i:i + 256]))[1])
                             for i in range(0, len(split), 256)]).numpy()
        out[f"{name}_mil_auc"] = round(float(binary_auc(np.isin(split.class_ids, sorted(CRYSTAL_CLASS_IDS)), mil)), 4)
    raw = args.data / "raw"
    classes = read_truth(raw)
    keep = [i for i, c in enumerate(test.class_ids) if c in CRYSTAL_CLASS_IDS]
    ids = [test.image_ids[i] for i in keep]
    pixels = test.pixels[keep]
    shapes = geometry(raw, ids, classes)
    boxes = [[s for s in shapes[i] if s.kind == "crystal"] for i in ids]
    drops = [next(s for s in shapes[i] if s.kind == "drop") for i in ids]
    sizes = picture_sizes([picture_path(raw, i) for i in ids])

    def gap(x, y, b, w, h):  # distance in picture pixels from (x, y) to box b (0 inside)
        dx = max(b.x0 - x, 0.0, x - b.x1) * w
        dy = max(b.y0 - y, 0.0, y - b.y1) * h
        return float(np.hypot(dx, dy))

    def share(points, mask=None, tolerance=0.0):
        inside = np.array([any(gap(x, y, b, w, h) <= tolerance * min(w, h) for b in bs)
                           for (x, y), bs, (w, h) in zip(points, boxes, sizes)], dtype=float)
        if mask is not None:
            inside = inside[mask]
        lo, hi = bootstrap_mean_ci(inside)
        return [round(float(inside.mean()), 4), round(lo, 4), round(hi, 4)]

    with torch.no_grad():
        maps = torch.cat([net.both(torch.from_numpy(pixels[i:i + 256]))[1] for i in range(0, len(pixels), 256)])
    maps = maps.float().numpy()
    points = []
    for heat, (w, h) in zip(maps, sizes):
        cx = cam.cell_centres(net, "conv3", heat.shape[1])
        cy = cam.cell_centres(net, "conv3", heat.shape[0])
        r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
        x, y = cam.square_to_picture(cx[c], cy[r], res, w, h)
        points.append((float(x), float(y)))
    cls = np.array([classes[i] for i in ids])
    out["pointing_images"] = len(ids)
    out["pointing_mil"] = share(points)
    out["pointing_mil_by_class"] = {int(c): share(points, cls == c) for c in sorted(set(cls))}
    out["pointing_mil_tol15of224"] = share(points, tolerance=15 / 224)
    # The peak cell traced back to pixels: the input pixel whose gradient of that cell's score is largest.
    x = torch.from_numpy(pixels).float().requires_grad_(True)
    flat = net.both(x)[1].flatten(1)
    (grad,) = torch.autograd.grad(flat.gather(1, flat.argmax(1, keepdim=True)).sum(), x)
    traced = []
    inner = slice((res - net.crop) // 2, (res + net.crop) // 2)
    for g, (w, h) in zip(grad.abs().numpy(), sizes):
        window = np.full_like(g, -1.0)
        window[inner, inner] = g[inner, inner]
        r, c = np.unravel_index(int(np.argmax(window)), window.shape)
        traced.append(tuple(float(v) for v in cam.square_to_picture(c + 0.5, r + 0.5, res, w, h)))
    out["pointing_mil_cell_gradient"] = share(traced)
    out["pointing_mil_cell_gradient_by_class"] = {int(c): share(traced, cls == c) for c in sorted(set(cls))}
    out["pointing_mil_cell_gradient_tol15of224"] = share(traced, tolerance=15 / 224)
    out["pointing_mil_tol15of224_by_class"] = {int(c): share(points, cls == c, 15 / 224) for c in sorted(set(cls))}
    if args.save:
        torch.save({"state": net.state_dict(), "ids": ids, "points": points}, args.save)
    for layer in ("conv4", "conv3"):
        pos = cam.crystal_positions(net, pixels, sizes, layer=layer)
        out[f"pointing_gradcam_{layer}"] = share([(q.x, q.y) for q in pos])
        out[f"pointing_gradcam_{layer}_tol15of224"] = share([(q.x, q.y) for q in pos], tolerance=15 / 224)
    centres = [((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2) for d in drops]
    out["pointing_drop_centre"] = share(centres)
    out["pointing_drop_centre_tol15of224"] = share(centres, tolerance=15 / 224)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
