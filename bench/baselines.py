"""Baseline cost: engineered-feature extraction per image, and fit/predict time of RF, MLP, kNN.

Figures (one JSON line each):
  machine            CPU model, cores, load average when the run started (a shared box)
  feature_extraction ms per image at --resolution on --workers processes (wall clock), and
                     single-process ms per image, wall and CPU (CPU time is the figure
                     neighbours on a shared machine disturb least)
  baseline           per model: fit and predict seconds on an 80/20 split of the images,
                     and accuracy (toy images: this shows the code works, not who wins)

Images are generated here with numpy: ten simple textures (smooth, speckle, lines, blobs,
rings and mixtures) at random brightness, so the run needs no archive.

    .venv/bin/python bench/baselines.py --images 2000 --workers 2 --resolution 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from machine import cpu_name  # bench/machine.py


def toy_images(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes built from four ingredients (speckle, lines, blobs, rings) on a grey drop."""
    rng = np.random.default_rng(seed)
    recipes = {1: (), 2: ("speckle",), 3: ("lines",), 4: ("blobs",), 5: ("speckle", "lines"),
               6: ("speckle", "rings"), 7: ("blobs", "lines"), 8: ("blobs", "speckle"),
               9: ("rings",), 10: ("dark",)}
    y = rng.integers(1, 11, n)
    yy, xx = np.mgrid[:side, :side] / side
    out = np.empty((n, side, side), dtype=np.uint8)
    for i, label in enumerate(y):
        img = 110 + 60 * rng.random() + 30 * (xx * rng.random() + yy * rng.random())
        img = img + rng.normal(0, 4, (side, side))
        for part in recipes[int(label)]:
            if part == "speckle":
                img[rng.random((side, side)) < 0.12] -= 60
            elif part == "lines":
                for _ in range(rng.integers(2, 6)):
                    r0, c0 = rng.integers(side // 8, side - side // 8, 2)
                    a = rng.random() * np.pi
                    t = np.linspace(-side / 6, side / 6, 3 * side)
                    img[np.clip((r0 + t * np.sin(a)).astype(int), 0, side - 1),
                        np.clip((c0 + t * np.cos(a)).astype(int), 0, side - 1)] = 245
            elif part == "blobs":
                for _ in range(rng.integers(3, 8)):
                    r0, c0 = rng.integers(0, side, 2)
                    rad = side * (0.03 + 0.06 * rng.random())
                    img[(yy * side - r0) ** 2 + (xx * side - c0) ** 2 < rad ** 2] += 40
            elif part == "rings":
                r = np.hypot(yy - 0.5, xx - 0.5) * side
                img += 25 * np.sin(r / (1.5 + 2 * rng.random()))
            elif part == "dark":
                img -= 70
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--serial-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from crystal_pipeline.baselines import extract_features, fit_baselines, predict_proba_baselines

    print(json.dumps({"figure": "machine", "cpu": cpu_name(), "cores": os.cpu_count(),
                      "loadavg_1m": os.getloadavg()[0], "python": platform.python_version()}),
          flush=True)
    images, y = toy_images(args.images, args.resolution, args.seed)

    extract_features(images[:4])  # warm imports and filter banks before timing
    started, cpu = time.perf_counter(), time.process_time()
    extract_features(images[:args.serial_images], workers=1)
    serial_wall = time.perf_counter() - started
    serial_cpu = time.process_time() - cpu
    started = time.perf_counter()
    features = extract_features(images, workers=args.workers)
    wall = time.perf_counter() - started
    print(json.dumps({
        "figure": "feature_extraction", "resolution": args.resolution, "images": args.images,
        "workers": args.workers, "features": int(features.shape[1]), "seconds": round(wall, 2),
        "ms_per_image": round(1000 * wall / args.images, 2),
        "serial_ms_per_image_wall": round(1000 * serial_wall / args.serial_images, 2),
        "serial_ms_per_image_cpu": round(1000 * serial_cpu / args.serial_images, 2),
    }), flush=True)

    n_train = int(0.8 * args.images)
    models = fit_baselines(features[:n_train], images[:n_train], y[:n_train], seed=args.seed,
                           workers=args.workers)
    predictions = predict_proba_baselines(models, features[n_train:], images[n_train:])
    for name, model in models.items():
        p = predictions[name]
        print(json.dumps({
            "figure": "baseline", "model": name, "reads": model.reads, "workers": args.workers,
            "train_images": n_train, "val_images": args.images - n_train,
            "fit_seconds": round(model.fit_seconds, 3), "predict_seconds": round(p.seconds, 3),
            "predict_ms_per_image": round(1000 * p.seconds / (args.images - n_train), 3),
            "toy_accuracy": round(float((p.probs.argmax(1) + 1 == y[n_train:]).mean()), 3),
        }), flush=True)


if __name__ == "__main__":
    main()
