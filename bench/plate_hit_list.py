"""How believable is a labelled synthetic plate's hit list? Its hits and review-first wells against the generator's truth.

The demo drops plate SYN0101 (seed 101) into the incoming folder and labels it; the plate
has no annotations, but the generator knows each well's drawn class (``plate_classes``,
the same draw ``write_plate`` made). This reads the plate's ``hits.csv`` and reports what a
crystallographer would ask of it: of the wells flagged, how many hold a crystal
(precision); of the wells that hold one, how many were flagged (recall); and the same for
the review-first wells (the report's budget) and the top k by crystal probability.

The truth is the drawn class, before annotators: a crystal drawn too small or buried to be
seen still counts as a crystal here, so precision and recall are of the drawing, not of
what an expert would have called it.

    python bench/plate_hit_list.py --raw data/raw --hits data/reports/plates/SYN0101/hits.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

from crystal_pipeline.classes import CRYSTAL_CLASS_IDS  # noqa: E402
from crystal_pipeline.synthetic.archive import archive_settings, plate_classes  # noqa: E402
from crystal_pipeline.synthetic.class_mix import normalize_mix  # noqa: E402
from crystal_pipeline.wells import all_wells  # noqa: E402


def drawn_crystal_wells(raw: Path, plate_id: str, seed: int, plate_format: int) -> dict[str, bool]:
    """Well name -> whether the generator drew a crystal class there (the archive's settings)."""
    imager = archive_settings(raw)["imager"]
    classes = plate_classes(plate_id, seed, plate_format, normalize_mix(None, imager), imager)
    return {w.name: int(c) in CRYSTAL_CLASS_IDS for w, c in zip(all_wells(plate_format), classes)}


def share(flags: list[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if flags else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="the archive the plate was drawn like (its summary)")
    parser.add_argument("--hits", type=Path, required=True, help="the plate's hits.csv")
    parser.add_argument("--plate-id", default="SYN0101")
    parser.add_argument("--seed", type=int, default=101, help="the plate's seed (scripts/label_new_plate.py: 101)")
    parser.add_argument("--format", type=int, default=1536)
    parser.add_argument("--top", default="24,77,154", help="k for precision at the top k wells")
    args = parser.parse_args(argv)

    truth = drawn_crystal_wells(args.raw, args.plate_id, args.seed, args.format)
    rows = sorted(csv.DictReader(args.hits.open()), key=lambda r: int(r["rank"]))
    crystal = [truth[r["well"]] for r in rows]
    hit = [r["hit"] == "1" for r in rows]
    review = [r["review_first"] == "1" for r in rows]
    total = sum(truth.values())
    out = {
        "bench": "plate_hit_list", "machine": machine.describe(), "plate": args.plate_id, "wells": len(rows),
        "drawn_crystal_wells": total,
        "hits": sum(hit), "hit_precision": share([c for c, h in zip(crystal, hit) if h]),
        "hit_recall": round(sum(c and h for c, h in zip(crystal, hit)) / total, 4) if total else None,
        "review_first": sum(review), "review_first_precision": share([c for c, v in zip(crystal, review) if v]),
        "precision_at": {k: share(crystal[:k]) for k in (int(t) for t in args.top.split(","))},
        "base_rate": round(total / len(truth), 4),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
