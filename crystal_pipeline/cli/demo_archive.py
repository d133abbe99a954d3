"""``crystal-pipeline demo-archive``: write the synthetic raw archive from a shell."""

from __future__ import annotations

import argparse

from crystal_pipeline.synthetic.imager import DEMO_IMAGER


def _class_mix(text: str) -> dict[str, float]:
    """``clear=5,crystal=2`` -> weights by class name (or id)."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected name=weight, got {part!r}") from None
    return mix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="archive directory to create")
    parser.add_argument("--plates", type=int, default=4, help="number of plates (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--wells", type=int, default=1536, choices=(96, 384, 1536), help="plate format")
    parser.add_argument("--size", type=int, default=None,
                        help="image rows in pixels (default: the imager's own, 128 for HWI, 256 for A and B)")
    parser.add_argument("--difficulty", type=float, default=None, help="0 (obvious) .. 1 (faint); default 0.5")
    parser.add_argument("--class-mix", type=_class_mix, default=None,
                        help="weights like clear=5,crystal=2 (default: the paper's Table 2 mix)")
    parser.add_argument("--imager", default=DEMO_IMAGER, type=str.upper, choices=("A", "B", "HWI"),
                        help="the lab's camera: HWI (default), the paper's kind of imager and the twin calibrated "
                             "on its baselines: a bright drop under oil on black in 4:3 frames, lighting fixed per "
                             "plate, one protein's outcomes per plate; or A or B, two labs' bright-field cameras "
                             "(crystal_pipeline/synthetic/imager.py)")
    parser.add_argument("--uv", action="store_true",
                        help="also write a UV picture <well>.uv.png of every well, and salt crystals in some drops "
                             "(bright in white light, dark in UV; crystal_pipeline/synthetic/uv.py)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an archive already in --out")


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from crystal_pipeline.synthetic.archive import write_archive
    from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        summary = write_archive(
            args.out, plates=args.plates, seed=args.seed, wells=args.wells, size=args.size,
            class_mix=args.class_mix,
            difficulty=DEFAULT_DIFFICULTY if args.difficulty is None else args.difficulty,
            workers=args.workers, overwrite=args.overwrite, imager=args.imager, uv=args.uv,
        )
    except (FileExistsError, ValueError) as exc:
        logging.error("%s", exc)
        return 2
    print(json.dumps(summary.to_json()))
    return 0
