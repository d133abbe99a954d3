"""Calibrate the synthetic twin on the paper's baselines: how hard is the archive for kNN, RF, MLP?

Issue 17: the archive is tuned until the paper's own baselines (Table 5: kNN on pixels
70.7%, RF 82.8%, MLP 86.9% on engineered features), its unanimous share (85,188 of 163,894
images, 52%) and Table 2's consensus class shares come out as on HWI's data. CrystalNet
takes no part: it would make every later figure of it meaningless.

This probe draws plates exactly as ``write_archive`` does (same seeds, lighting, class mix
and annotator panel; ``render_pool`` draws every well) but keeps the pixels in memory
(PNG is lossless, so nothing is lost by skipping it), crops the central square as ingest
does, keeps the unanimous images, splits them by the pipeline's own well hash (70/10/20),
fits the baselines on train and reports **val** (what the calibration is judged on) and
test (reported only) with 95% bootstrap intervals. A few minutes for 16 plates at 128 px
on 2 cores, so a calibration step is one run.

    .venv/bin/python bench/twin_calibration.py --plates 16 --imager hwi
    .venv/bin/python bench/twin_calibration.py --plates 16 --imager hwi --difficulty 0.35 --confusion

One JSON line per figure on stdout (``--out FILE`` also keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402  (bench/machine.py)

#: Table 5 of the paper: accuracy on its validation/test images.
PAPER = {"Nearest Neighbor": 0.707, "RF": 0.828, "Neural Net": 0.869, "unanimous_share": 85188 / 163894}


def _render_plate(job: tuple) -> dict:
    """One plate's unanimous images as the pipeline's 128 px view, with their labels."""
    from PIL import Image

    from crystal_pipeline.classes import unanimous_class
    from crystal_pipeline.ingest.imaging import _crop_resize
    from crystal_pipeline.synthetic.annotators import annotator_pool
    from crystal_pipeline.synthetic.archive import plate_classes
    from crystal_pipeline.synthetic.class_mix import normalize_mix
    from crystal_pipeline.synthetic.hwi import plate_lighting
    from crystal_pipeline.synthetic.imager import imager_named
    from crystal_pipeline.synthetic.render_pool import draw_well, plate_key
    from crystal_pipeline.wells import all_wells

    plate_id, seed, wells, size, difficulty, imager_name, resolution, cocktails = job
    imager = imager_named(imager_name)
    key = plate_key(plate_id)
    lighting = plate_lighting(seed, key, imager)
    pool = annotator_pool(seed)
    classes = plate_classes(plate_id, seed, wells, normalize_mix(None, imager_name), imager_name)
    names = [w.name for w in all_wells(wells)]
    if cocktails.propensity:
        classes = cocktails.place(classes, seed, key, wells, normalize_mix(None, imager_name))
    pixels, labels, drawn, ids = [], [], [], []
    for index, class_id in enumerate(classes):
        light = cocktails.lighting(lighting, wells, index)
        image, _, votes = draw_well(seed, key, index, int(class_id), size, difficulty, imager, light, pool)
        label = unanimous_class(attributes for _, attributes in votes)
        drawn.append(int(class_id))
        if label is None:
            continue
        square = _crop_resize(Image.fromarray(image, mode="L"), resolution)
        pixels.append(np.asarray(square, dtype=np.uint8))
        labels.append(label)
        ids.append(f"{plate_id}/{names[index]}.png")
    return {"pixels": np.stack(pixels) if pixels else np.empty((0, resolution, resolution), np.uint8),
            "labels": np.asarray(labels, np.int64), "ids": ids, "drawn": np.asarray(drawn)}


@lru_cache(maxsize=4)
def _look_draws(wells: int) -> np.ndarray:
    """(wells, 4) standard normals, one row per cocktail: drawn once per format, not per well."""
    return np.random.default_rng([wells, 0x100C]).normal(size=(wells, 4))


@dataclass(frozen=True)
class Cocktails:
    """A what-if the generator does not draw (tried 2026-12-08, docs/synthetic_archive.md; not
    kept): the paper's screen puts 96 proteins on the same 1536 cocktails, so a cocktail could
    carry (``propensity``) its own outcome odds, Dirichlet(10 x propensity x mix) fixed across
    plates, by which a plate's classes are placed in its wells, and (``look``) its own drop,
    fixed across plates: radius sd 4%, level 6%, rim 25%, x offset 2% of the height, x look."""

    propensity: float = 0.0
    look: float = 0.0

    def place(self, classes, seed: int, key: int, wells: int, mix: dict) -> np.ndarray:
        ids = sorted(c for c in mix if mix[c] > 0)
        odds = np.random.default_rng([wells, 0xC0C7A1]).dirichlet([self.propensity * mix[c] * 10 for c in ids],
                                                                     size=wells)
        factor = {c: odds[:, i] / mix[c] for i, c in enumerate(ids)}
        rng = np.random.default_rng([seed, key, 0x71ACE])
        free, placed = np.ones(wells, bool), np.zeros(wells, np.int64)
        for label in rng.permutation(np.asarray(classes)):  # each label into a free well, by its cocktail's odds
            weight = factor[int(label)] * free
            well = rng.choice(wells, p=weight / weight.sum())
            placed[well], free[well] = label, False
        return placed

    def lighting(self, lighting, wells: int, index: int):
        if not self.look:
            return lighting
        z = _look_draws(wells)[index]
        return replace(lighting, drop_radius=lighting.drop_radius * (1 + 0.04 * self.look * z[0]),
                       drop_level=lighting.drop_level * (1 + 0.06 * self.look * z[1]),
                       rim=lighting.rim * (1 + 0.25 * self.look * z[2]),
                       offset_x=lighting.offset_x + 0.02 * self.look * z[3])


def draw(plates: int, seed: int, wells: int, size: int, difficulty: float, imager: str, resolution: int,
         workers: int, cocktails: Cocktails = Cocktails()) -> dict:
    from crystal_pipeline.synthetic.archive import plate_ids

    jobs = [(p, seed, wells, size, difficulty, imager, resolution, cocktails) for p in plate_ids(plates)]
    started = time.perf_counter()
    parts = []
    if workers <= 1:
        parts = [_render_plate(job) for job in jobs]
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for i, part in enumerate(pool.map(_render_plate, jobs), 1):
                parts.append(part)
                print(f"# drawn {i}/{len(jobs)} plates, {time.perf_counter() - started:.0f} s", file=sys.stderr,
                      flush=True)
    return {"pixels": np.concatenate([p["pixels"] for p in parts]),
            "labels": np.concatenate([p["labels"] for p in parts]),
            "ids": [i for p in parts for i in p["ids"]],
            "drawn": np.concatenate([p["drawn"] for p in parts]),
            "seconds": time.perf_counter() - started}


def sides(ids: list[str]) -> np.ndarray:
    """The pipeline's own split (``split_by: well``, 70/10/20) of these image ids."""
    from crystal_pipeline.ingest.splits import assign_sides

    side = assign_sides((image_id, None) for image_id in ids)
    return np.asarray([side[image_id] for image_id in ids])


def _ci(right: np.ndarray) -> tuple[float, float]:
    from crystal_pipeline.evaluation.uncertainty import bootstrap_indices, percentile_interval

    idx = bootstrap_indices(len(right), 1000, seed=0)
    return percentile_interval(right[idx].mean(axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=16)
    parser.add_argument("--wells", type=int, default=1536)
    parser.add_argument("--size", type=int, default=128, help="rows the generator draws (archive --size)")
    parser.add_argument("--resolution", type=int, default=128, help="the pipeline's square view")
    parser.add_argument("--difficulty", type=float, default=None)
    parser.add_argument("--imager", default="hwi")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--models", default="Nearest Neighbor,RF,Neural Net",
                        help="comma-separated baselines to fit (kNN alone skips feature extraction)")
    parser.add_argument("--confusion", action="store_true", help="also print each baseline's val confusion")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cocktail-propensity", type=float, default=0.0,
                        help="what-if, not the generator: each cocktail's outcome odds across plates (Cocktails)")
    parser.add_argument("--cocktail-look", type=float, default=0.0,
                        help="what-if, not the generator: each cocktail's own drop look across plates (Cocktails)")
    args = parser.parse_args()

    from crystal_pipeline.baselines import extract_features, fit_baselines, predict_proba_baselines
    from crystal_pipeline.classes import CLASS_IDS
    from crystal_pipeline.evaluation.metrics import predicted_classes
    from crystal_pipeline.synthetic.mix_calibration import table2_shares
    from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY

    difficulty = DEFAULT_DIFFICULTY if args.difficulty is None else args.difficulty
    records = []

    def emit(record: dict) -> None:
        records.append(record)
        print(json.dumps(record), flush=True)

    emit({"figure": "machine", "cpu": cpu_name(), "cores": os.cpu_count(), "load": round(os.getloadavg()[0], 2),
          "plates": args.plates, "wells": args.wells, "size": args.size, "imager": args.imager,
          "difficulty": difficulty, "seed": args.seed,
          "cocktail_propensity": args.cocktail_propensity, "cocktail_look": args.cocktail_look})
    data = draw(args.plates, args.seed, args.wells, args.size, difficulty, args.imager, args.resolution,
                args.workers, Cocktails(args.cocktail_propensity, args.cocktail_look))
    labels = data["labels"]
    counts = np.bincount(labels, minlength=11)[1:]
    emit({"figure": "consensus", "images": int(len(data["drawn"])), "unanimous": int(len(labels)),
          "unanimous_share": round(len(labels) / len(data["drawn"]), 4), "paper": round(PAPER["unanimous_share"], 4),
          "shares": {c: round(float(n) / len(labels), 4) for c, n in zip(CLASS_IDS, counts)},
          "table2": {c: round(float(t), 4) for c, t in zip(CLASS_IDS, table2_shares())},
          "largest_share_gap": round(float(np.abs(counts / len(labels) - table2_shares()).max()), 4),
          "draw_seconds": round(data["seconds"], 1)})

    names = tuple(n.strip() for n in args.models.split(",") if n.strip())
    started = time.perf_counter()
    if set(names) - {"Nearest Neighbor"}:
        features = extract_features(data["pixels"], workers=args.workers)
    else:  # kNN reads pixels only
        features = np.zeros((len(labels), 1), np.float32)
    feature_seconds = time.perf_counter() - started
    side = sides(data["ids"])
    train = side == "train"
    started = time.perf_counter()
    models = fit_baselines(features[train], data["pixels"][train], labels[train], seed=0, workers=args.workers,
                           names=names)
    fit_seconds = time.perf_counter() - started
    for split in ("val", "test"):
        mask = side == split
        predictions = predict_proba_baselines(models, features[mask], data["pixels"][mask])
        for name, prediction in predictions.items():
            predicted = predicted_classes(prediction.probs)
            right = predicted == labels[mask]
            record = {"figure": "baseline", "split": split, "model": name, "images": int(mask.sum()),
                      "train_images": int(train.sum()), "accuracy": round(float(right.mean()), 4),
                      "accuracy_ci95": [round(x, 4) for x in _ci(right)], "paper": PAPER[name]}
            if args.confusion and split == "val":
                confusion = np.zeros((10, 10), np.int64)
                np.add.at(confusion, (labels[mask] - 1, predicted - 1), 1)
                record["confusion"] = confusion.tolist()
            emit(record)
    majority = np.bincount(labels[train]).argmax()
    emit({"figure": "majority", "val": round(float((labels[side == "val"] == majority).mean()), 4),
          "feature_seconds": round(feature_seconds, 1), "fit_seconds": round(fit_seconds, 1)})
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in records) + "\n")


if __name__ == "__main__":
    main()
