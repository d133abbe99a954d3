"""Pointing game: does the model's crystal map peak on a crystal the generator drew? (issue 20 item 4)

On the has-crystal wells of a synthetic archive's test split that the model flags
(crystal_prob >= its calibrated hit threshold), the share whose map peak
(``model.cam.crystal_positions``) falls inside a drawn crystal's box
(``synthetic_geometry.csv``; for an archive written before that file, the boxes are
drawn again from the archive's seed: the same streams, so the same crystals), with a
95% bootstrap interval. Target: >= 80%. For every layer and method of ``model.cam``, and
beside two baselines that know nothing of the image's content: the drop's centre (from
the geometry truth itself) and a uniform random point of the picture.

    nice -n 10 python bench/crystal_position.py --raw <archive> --model <model.pt>

Where the CPU has bf16 units the default map is also computed in bf16 (as a plate's labelling
then does), reporting its speed beside fp32's at the same moment and how far its peaks move.
``--occlusion`` adds a slow diagnostic (:func:`occlusion_peaks`): whether the model's crystal
evidence sits on the crystal at all, whatever map reads it.

The test split is the warehouse's rule (``ingest.splits.assign_sides`` by well, default
seed), recomputed here from the image ids. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

from crystal_pipeline.classes import CRYSTAL_COLUMNS, CRYSTAL_CLASS_IDS  # noqa: E402
from crystal_pipeline.evaluation.uncertainty import bootstrap_mean_ci  # noqa: E402
from crystal_pipeline.ingest.imaging import load_grey  # noqa: E402
from crystal_pipeline.ingest.splits import assign_sides  # noqa: E402
from crystal_pipeline.model import cam  # noqa: E402
from crystal_pipeline.synthetic.geometry import GEOMETRY_FILE, Shape  # noqa: E402


def read_truth(raw: Path) -> dict[str, int]:
    return {f"{r['plate_id']}/{r['well']}": int(r["class_id"])
            for r in csv.DictReader((raw / "synthetic_truth.csv").open())}


def picture_path(raw: Path, image_id: str) -> Path:
    """The picture of ``<plate>/<well>`` in a generated archive."""
    plate, well = image_id.split("/")
    return raw / "plates" / plate / f"{well}.png"


def picture_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """Each picture's ``(width, height)`` as taken (the maps' positions are fractions of it)."""
    from PIL import Image

    sizes = []
    for path in paths:
        with Image.open(path) as im:
            sizes.append(im.size)
    return sizes


def geometry(raw: Path, image_ids: list[str], classes: dict[str, int]) -> dict[str, list[Shape]]:
    """Drawn shapes per image id: from the archive's geometry file, or drawn again from its seed."""
    out: dict[str, list[Shape]] = {i: [] for i in image_ids}
    if (raw / GEOMETRY_FILE).exists():
        for r in csv.DictReader((raw / GEOMETRY_FILE).open()):
            key = f"{r['plate_id']}/{r['well']}"
            if key in out:
                out[key].append(Shape(r["kind"], *(float(r[c]) for c in ("x0", "y0", "x1", "y1"))))
        return out
    from crystal_pipeline.synthetic.hwi import plate_lighting
    from crystal_pipeline.synthetic.imager import imager_named
    from crystal_pipeline.synthetic.render_pool import draw_well, plate_key
    from crystal_pipeline.wells import all_wells

    summary = json.loads((raw / "synthetic_summary.json").read_text())
    imager = imager_named(summary.get("imager", "A"))
    index = {w.name: i for i, w in enumerate(all_wells(summary["plate_format"]))}
    for image_id in image_ids:
        plate, well = image_id.split("/")
        key = plate_key(plate)
        _, truth, _ = draw_well(summary["seed"], key, index[well], classes[image_id], summary["size"],
                                summary["difficulty"], imager, plate_lighting(summary["seed"], key, imager), None)
        out[image_id] = list(truth.geometry)
    return out


def contact_sheet(path: Path, raw: Path, image_ids: list[str], shapes: dict, points: dict[str, list],
                  every: int = 25, count: int = 12) -> None:
    """Every ``every``-th picture (up to ``count``) at twice its size: the drawn crystals' boxes in
    green, each map's peak (``points``: name -> (x, y) fractions per image) as a circle whose
    colour and size name the map, legend in the first tile. To look at, not to score."""
    from PIL import Image, ImageDraw

    colours = [(255, 60, 60), (60, 160, 255), (255, 200, 0), (200, 80, 255)]
    tiles = []
    for k in range(0, len(image_ids), every)[:count]:
        with Image.open(picture_path(raw, image_ids[k])) as im:
            tile = im.convert("RGB").resize((im.width * 2, im.height * 2))
        draw, (w, h) = ImageDraw.Draw(tile), tile.size
        for box in shapes[image_ids[k]]:
            if box.kind == "crystal":
                draw.rectangle([box.x0 * w, box.y0 * h, box.x1 * w, box.y1 * h], outline=(0, 255, 0))
        for n, (name, xy) in enumerate(points.items()):
            x, y, r = xy[k][0] * w, xy[k][1] * h, 8 - 2 * n
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colours[n % len(colours)], width=2)
            if not tiles:
                draw.text((4, 4 + 12 * n), name, fill=colours[n % len(colours)])
        tiles.append(tile)
    if not tiles:
        return
    w, h = tiles[0].size
    sheet = Image.new("RGB", (w * 4, h * ((len(tiles) + 3) // 4)))
    for k, tile in enumerate(tiles):
        sheet.paste(tile.resize((w, h)), ((k % 4) * w, (k // 4) * h))
    sheet.convert("P", palette=Image.ADAPTIVE, colors=32).save(path, optimize=True)


def occlusion_peaks(net, pixels: np.ndarray, patch: int = 8, stride: int = 4, batch: int = 256, *,
                    insertion: bool = False, sigma: float | None = None) -> np.ndarray:
    """Peaks (u, v) in input-square pixels of an occlusion map (Zeiler & Fergus 2014): each
    ``patch``-pixel square of the evaluation crop in turn replaced by a Gaussian-blurred copy of
    the picture (the drop's light stays, structures a few pixels across go), the map at a pixel
    the mean drop in crystal log-odds of the patches covering it. A diagnostic, not a pipeline
    map: ``patch``-stride grids cost about (crop / stride)^2 forwards per picture. It asks the
    question Grad-CAM's coarse grid cannot: does the model's crystal evidence sit on the crystal?

    ``insertion``: the converse, each window alone kept sharp in a blurred picture (blur
    ``sigma``, default ``patch / 2``), the map the crystal log-odds the window restores:
    whether a crystal, seen on its own, is what the model calls crystal."""
    import torch
    from PIL import Image, ImageFilter

    res, crop = net.resolution, net.crop
    off = (res - crop) // 2
    starts = range(off, off + crop - patch + 1, stride)
    cells = [(r, c) for r in starts for c in starts]
    others = [c for c in range(net.num_classes) if c not in CRYSTAL_COLUMNS]

    def log_odds(x):
        with torch.no_grad():
            logits = net(torch.from_numpy(x)).float()
        return (torch.logsumexp(logits[:, list(CRYSTAL_COLUMNS)], 1) - torch.logsumexp(logits[:, others], 1)).numpy()

    base = log_odds(pixels)
    peaks = np.zeros((len(pixels), 2))
    for i, image in enumerate(pixels):
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma or patch / 2)))
        inside, outside = (image, blurred) if insertion else (blurred, image)
        occluded = np.repeat(outside[None], len(cells), axis=0)
        for k, (r, c) in enumerate(cells):
            occluded[k, r:r + patch, c:c + patch] = inside[r:r + patch, c:c + patch]
        scores = np.concatenate([log_odds(occluded[j:j + batch]) for j in range(0, len(cells), batch)])
        drop = scores if insertion else base[i] - scores
        heat, count = np.zeros((res, res)), np.zeros((res, res))
        for k, (r, c) in enumerate(cells):
            heat[r:r + patch, c:c + patch] += drop[k]
            count[r:r + patch, c:c + patch] += 1
        heat = np.where(count > 0, heat / np.maximum(count, 1), -np.inf)
        row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
        peaks[i] = col + 0.5, row + 0.5
    return peaks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="at most this many has-crystal images (0: all)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="flag at this crystal probability instead of the model's calibrated threshold "
                             "(0: every has-crystal image, to compare models on the same images)")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="write a contact sheet (PNG) of flagged pictures: drawn boxes and the conv4 peaks")
    parser.add_argument("--insertion", action="store_true",
                        help="also the insertion diagnostic (occlusion_peaks(insertion=True): 16 px windows kept "
                             "sharp in a picture blurred at sigma 4; about 170 forwards a picture at 64 px)")
    parser.add_argument("--occlusion", action="store_true",
                        help="also the occlusion diagnostic (occlusion_peaks; about 170 forwards a picture at 64 px)")
    args = parser.parse_args(argv)

    import torch

    from crystal_pipeline.model import calibration_of, load
    from crystal_pipeline.model.inference import calibrated, predict_proba

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started = time.perf_counter()
    classes = read_truth(args.raw)
    sides = assign_sides((i, None) for i in classes)
    ids = sorted(i for i, c in classes.items() if sides[i] == args.split and c in CRYSTAL_CLASS_IDS)
    if args.limit:
        ids = ids[: args.limit]
    net = load(args.model, "cpu")
    temperature, threshold = calibration_of(net.artifact_meta)
    if args.threshold is not None:
        threshold = args.threshold
    paths = [picture_path(args.raw, i) for i in ids]
    pixels = np.stack([load_grey(p, net.resolution) for p in paths])
    sizes = picture_sizes(paths)
    probs = calibrated(lambda x: predict_proba(net, x), temperature)(pixels)
    crystal = probs[:, list(CRYSTAL_COLUMNS)].sum(axis=1)
    flagged = np.flatnonzero(crystal >= threshold)
    shapes = geometry(args.raw, [ids[i] for i in flagged], classes)
    boxes = [[s for s in shapes[ids[i]] if s.kind == "crystal"] for i in flagged]
    drops = [next(s for s in shapes[ids[i]] if s.kind == "drop") for i in flagged]

    def share(points) -> dict:
        inside = np.array([any(b.contains(x, y) for b in bs) for (x, y), bs in zip(points, boxes)], dtype=float)
        low, high = bootstrap_mean_ci(inside) if len(inside) else (float("nan"), float("nan"))
        return {"share": round(float(inside.mean()), 4) if len(inside) else None,
                "ci95": [round(low, 4), round(high, 4)]}

    results, peaks = {}, {}
    for layer in cam.LAYERS:
        for method in cam.METHODS:
            t0 = time.perf_counter()
            positions = cam.crystal_positions(net, pixels[flagged], [sizes[i] for i in flagged], layer=layer,
                                              method=method)
            seconds = time.perf_counter() - t0
            peaks[f"{layer}/{method}"] = [(p.x, p.y) for p in positions]
            results[f"{layer}/{method}"] = {**share([(p.x, p.y) for p in positions]),
                                            "images_per_s": round(len(flagged) / seconds, 1) if seconds else None}
    # The plate's own arithmetic: where the CPU has bf16 units labelling runs in bf16 and so do the
    # positions (plates.labelling). Same default map in bf16: its speed, its pointing share, and how
    # far its peak lies from fp32's (in the default layer's cells, on the network's input square).
    from crystal_pipeline.model.precision import choose_precision

    choice = choose_precision("auto", "cpu")
    if choice.precision == "bf16" and len(flagged):
        images = pixels[flagged]
        flagged_sizes = [sizes[i] for i in flagged]
        timed = {}
        for precision in ("fp32", "bf16"):  # again, back to back, so the ratio is of one moment
            t0 = time.perf_counter()
            timed[precision] = cam.crystal_positions(net, images, flagged_sizes, precision=precision)
            timed[f"{precision}_s"] = time.perf_counter() - t0
        cell = cam.LAYERS[cam.DEFAULT_LAYER][0] / net.resolution  # one cell, as a fraction of the square
        apart = np.array([max(abs(a.x - b.x) * w, abs(a.y - b.y) * h) / min(w, h) / cell
                          for a, b, (w, h) in zip(timed["fp32"], timed["bf16"], flagged_sizes)])
        results[f"{cam.DEFAULT_LAYER}/{cam.DEFAULT_METHOD}/bf16"] = {
            **share([(p.x, p.y) for p in timed["bf16"]]),
            "images_per_s": round(len(flagged) / timed["bf16_s"], 1),
            "fp32_images_per_s_same_moment": round(len(flagged) / timed["fp32_s"], 1),
            "peaks_within_half_cell_of_fp32": round(float((apart <= 0.5).mean()), 4),
            "median_peak_shift_cells": round(float(np.median(apart)), 3)}
    if args.occlusion and len(flagged):
        t0 = time.perf_counter()
        uv = occlusion_peaks(net, pixels[flagged])
        points = [cam.square_to_picture(u, v, net.resolution, *sizes[i]) for (u, v), i in zip(uv, flagged)]
        results["diagnostic/occlusion"] = {**share([(float(x), float(y)) for x, y in points]),
                                           "images_per_s": round(len(flagged) / (time.perf_counter() - t0), 2)}
    if args.insertion and len(flagged):
        t0 = time.perf_counter()
        uv = occlusion_peaks(net, pixels[flagged], patch=16, insertion=True, sigma=4.0)
        points = [cam.square_to_picture(u, v, net.resolution, *sizes[i]) for (u, v), i in zip(uv, flagged)]
        results["diagnostic/insertion"] = {**share([(float(x), float(y)) for x, y in points]),
                                           "images_per_s": round(len(flagged) / (time.perf_counter() - t0), 2)}
    if args.sheet is not None:
        contact_sheet(args.sheet, args.raw, [ids[i] for i in flagged], shapes,
                      {name: peaks[name] for name in ("conv4/gradcam", "conv4/hirescam")})
    rng = np.random.default_rng(0)
    results["baseline/drop_centre"] = share([((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2) for d in drops])
    results["baseline/random_point"] = share([tuple(rng.random(2)) for _ in drops])
    box_area = [min(1.0, sum((b.x1 - b.x0) * (b.y1 - b.y0) for b in bs)) for bs in boxes]
    line = {
        "bench": "crystal_position", "machine": machine.describe(), "raw": str(args.raw), "model": str(args.model),
        "resolution": net.resolution, "split": args.split, "has_crystal_images": len(ids),
        "flagged": int(len(flagged)), "threshold": round(float(threshold), 4),
        "default": f"{cam.DEFAULT_LAYER}/{cam.DEFAULT_METHOD}", "target": 0.8, "results": results,
        "mean_box_area_share": round(float(np.mean(box_area)), 4) if box_area else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
