"""``crystal-pipeline train``: train CrystalNet on prepared tensors, no Dagster.

Examples::

    crystal-pipeline train --tensors data --out data/models/v1/model.pt --preset demo
    crystal-pipeline train --tensors data --out model.pt --preset paper --set lr=0.02 --resume
    crystal-pipeline train --tensors data --out ft.pt --preset finetune \
        --init-artifact data/models/<version>/model.pt --set init_from=<version>
    torchrun --nproc_per_node 8 -m crystal_pipeline train --tensors data --out model.pt --preset paper

Launched by Dagster Pipes (the crystalnet_model asset), rank 0 streams its progress and
sends its summary back (training/pipes_reporting.py) and writes ``--result`` for the asset.

torch is imported inside :func:`run` so that listing the commands stays fast.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tensors", required=True,
                        help="data dir, its tensors/ folder, or the tensors/r<res> folder")
    parser.add_argument("--out", required=True, help="where to write model.pt (checkpoint beside it: model.pt.ckpt)")
    parser.add_argument("--preset", default="demo", choices=("paper", "demo", "finetune", "smoke"),
                        help="training preset (default: demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set lr=0.02 --set init=paper (repeatable)")
    parser.add_argument("--init-artifact", default=None, metavar="MODEL_PT",
                        help="fine-tune: start from this model's weights and normalization; --set init_from=VERSION "
                             "names it (recorded in the artifact as parent_version)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.ckpt if it exists")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--trained-on", default="unknown",
                        help="provenance stored in the artifact: 'synthetic' or the raw archive's path")
    parser.add_argument("--quiet", action="store_true", help="only warnings and the final JSON summary")
    parser.add_argument("--result", default=None,
                        help="also write the run's result (scores, history, validation probabilities) to this .npz, "
                             "for the process that launched this one (the crystalnet_model asset)")


def parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from crystal_pipeline.model.device import resolve_device
    from crystal_pipeline.training import TrainConfig, train
    from crystal_pipeline.tensors import TensorDataError

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.WARNING if args.quiet or rank else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # The preset's budget for the arithmetic this device trains in (training.config.BF16_UPDATES).
        config = TrainConfig.from_preset(args.preset, parse_overrides(args.overrides),
                                         device_type=resolve_device(args.device).type)
    except ValueError as exc:
        raise SystemExit(f"crystal-pipeline train: {exc}") from None
    from crystal_pipeline.training.pipes_reporting import pipes_reporter

    lines: list[dict] = []

    def progress(stats: dict) -> None:
        lines.append(stats)
        reporter.progress(stats)

    with pipes_reporter() as reporter:
        try:
            result = train(config, args.tensors, args.out, device=args.device, trained_on=args.trained_on,
                           resume=args.resume, progress=progress, init_artifact=args.init_artifact)
        except (TensorDataError, ValueError) as exc:
            raise SystemExit(f"crystal-pipeline train: {exc}") from None
        if rank != 0:
            return 0
        if args.result:
            from crystal_pipeline.training.result_file import write_result

            write_result(result, args.result, progress=lines)
        summary = {
            "path": str(result.path) if result.path else None,
            "finished": result.finished,
            "updates": result.updates,
            "val_accuracy": result.val_accuracy,
            "crystal_auc": result.crystal_auc,
            "images_per_s": round(result.images_per_s, 2),
            "device": result.device,
            "precision": result.precision,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "seconds": round(result.seconds, 2),
            "checkpoint": None if result.finished else str(result.checkpoint_path),
        }
        reporter.summary(summary)
        print(json.dumps(summary))
    return 0
