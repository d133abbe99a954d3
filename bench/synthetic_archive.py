"""Time the synthetic archive writer; optionally check how separable its classes are.

    .venv/bin/python bench/synthetic_archive.py                 # 4 plates x 1536 wells at 256 px
    .venv/bin/python bench/synthetic_archive.py --separability  # + RF/kNN on ~3000 unanimous images

Prints one JSON line per figure. The separability figure is a sanity check of the
generator's difficulty, not the project's baseline comparison (that is
``model_comparison``): RandomForest on a grey histogram and gradient statistics,
kNN on 32 px pixels, 5-fold cross-validated on images whose annotators agreed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crystal_pipeline.classes import parse_attributes, unanimous_class  # noqa: E402
from crystal_pipeline.wells import parse_well  # noqa: E402
from crystal_pipeline.synthetic import write_archive  # noqa: E402
from machine import describe  # noqa: E402  (bench/machine.py)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers: on a shared machine the
    wall time depends on the neighbours, this does not."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def unanimous_labels(out: Path) -> dict[tuple[str, str], int]:
    """(plate, canonical well) -> class for images whose annotators all agreed."""
    sets: dict[tuple[str, str], set] = {}
    plates = {p.name for p in (out / "plates").iterdir()}
    for path in sorted((out / "annotations").glob("*.csv")):
        with path.open() as fh:
            for row in csv.DictReader(fh):
                try:
                    if row["plate_id"] not in plates or not row["annotator"]:
                        continue
                    key = (row["plate_id"], parse_well(row["well"]).name)
                    sets.setdefault(key, set()).add(parse_attributes(row["attributes"]))
                except Exception:
                    continue
    labels = {}
    for key, agreed in sets.items():
        if (cid := unanimous_class(agreed)) is not None:
            labels[key] = cid
    return labels


def features(pixels):
    import numpy as np

    img = pixels.astype(np.float32) / 255.0
    hist = np.histogram(img, bins=32, range=(0, 1))[0] / img.size
    gy, gx = np.gradient(img)
    mag = np.hypot(gx, gy)
    centre = img[img.shape[0] // 4: -img.shape[0] // 4, img.shape[1] // 4: -img.shape[1] // 4]
    cmag = mag[img.shape[0] // 4: -img.shape[0] // 4, img.shape[1] // 4: -img.shape[1] // 4]
    stats = [img.mean(), img.std(), centre.mean(), centre.std(), mag.mean(), mag.std(),
             np.percentile(mag, 90), np.percentile(mag, 99), cmag.mean(), np.percentile(cmag, 95),
             (cmag > 0.05).mean(), (cmag > 0.15).mean()]
    return np.concatenate([hist, np.histogram(cmag, bins=16, range=(0, 0.4))[0] / cmag.size, stats])


def separability(out: Path, limit: int, seed: int) -> dict:
    import numpy as np
    from PIL import Image
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = sorted(unanimous_labels(out).items())
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(labels))[:limit]
    feats, pix, ys = [], [], []
    for i in pick:
        (plate, well), cid = labels[i]
        im = Image.open(out / "plates" / plate / f"{well}.png")
        feats.append(features(np.asarray(im)))
        pix.append(np.asarray(im.resize((32, 32), Image.BILINEAR), dtype=np.float32).ravel() / 255.0)
        ys.append(cid)
    X, P, y = np.array(feats), np.array(pix), np.array(ys)
    rf = cross_val_score(RandomForestClassifier(300, n_jobs=2, random_state=0), X, y, cv=5).mean()
    knn = cross_val_score(KNeighborsClassifier(5), P, y, cv=5).mean()
    brightness = cross_val_score(RandomForestClassifier(100, random_state=0), X[:, [32 + 16]], y, cv=5).mean()
    majority = np.bincount(y).max() / len(y)
    return {"figure": "synthetic_separability", "images": int(len(y)), "rf_features_acc": round(float(rf), 4),
            "knn_pixels32_acc": round(float(knn), 4), "mean_brightness_only_acc": round(float(brightness), 4),
            "majority_class_acc": round(float(majority), 4), "cv": 5, "machine": describe()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=4)
    parser.add_argument("--wells", type=int, default=1536)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--separability", action="store_true", help="also score RF and kNN on unanimous images")
    parser.add_argument("--limit", type=int, default=3000, help="images for the separability check")
    parser.add_argument("--keep", type=Path, default=None, help="write the archive here and keep it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "raw"
        started = time.perf_counter()
        cpu_before = _cpu_seconds()
        summary = write_archive(out, plates=args.plates, seed=args.seed, wells=args.wells, size=args.size,
                                difficulty=args.difficulty, workers=args.workers, overwrite=args.keep is not None)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        print(json.dumps({"figure": "synthetic_archive_write", "images": summary.images, "size": args.size,
                          "workers": args.workers or os.cpu_count(), "seconds": round(seconds, 2),
                          "images_per_s": round(summary.images / seconds, 1), "cpu_seconds": round(cpu, 2),
                          "cpu_ms_per_image": round(1000 * cpu / summary.images, 2),
                          "load_avg_1min": round(os.getloadavg()[0], 2), "machine": describe()}), flush=True)
        if args.separability:
            print(json.dumps(separability(out, args.limit, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
