"""``crystal-pipeline export``: write a trained model in a portable format, with its model card.

Examples::

    crystal-pipeline export --model data/models/v1/model.pt --format onnx
    crystal-pipeline export --model model.pt --format onnx --out /tmp/crystalnet.onnx --metrics metrics.json

The ONNX file takes uint8 (N, R, R) crops and returns calibrated probabilities
(crystal_pipeline.model.onnx_export); ``<name>.card.json`` and ``<name>.card.md`` beside it
describe classes, input, calibration, training data and the evaluation with intervals.
The evaluation is read from ``<data_dir>/reports/evaluation/<version>/metrics.json``
when it exists (or ``--metrics``). onnx, onnxscript and onnxruntime are imported only here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a CrystalNet artifact (models/<version>/model.pt)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="portable format (only onnx so far)")
    parser.add_argument("--out", help="output file (default: model.onnx beside the artifact)")
    parser.add_argument("--metrics", help="the evaluation's metrics.json (default: the data dir's report for the "
                                          "model's version, when it exists)")
    parser.add_argument("--version", help="model version for the card (default: the artifact's folder name)")


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    if not model.is_file():
        return _fail(f"model artifact not found: {model}")
    from crystal_pipeline.model.onnx_export import ExportError, export_onnx
    from crystal_pipeline.model import ArtifactError

    version = args.version or model.resolve().parent.name
    try:
        metrics, metrics_path = _metrics(args.metrics, version)
    except (OSError, ValueError) as error:
        return _fail(f"cannot read metrics: {error}")
    out = Path(args.out) if args.out else model.with_suffix(".onnx")
    try:
        result = export_onnx(model, out, metrics=metrics, model_version=version)
    except (ExportError, ArtifactError) as error:
        return _fail(str(error))
    print(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 1e6:.1f} MB; max |onnx - torch| "
          f"{result.max_abs_diff:.1e} on {result.card['exported']['checked_images']} images)")
    print(f"model card: {result.card_json} and {result.card_md}"
          + (f" (metrics from {metrics_path})" if metrics_path else " (no evaluation metrics found)"))
    return 0


def _metrics(explicit: str | None, version: str) -> tuple[dict | None, Path | None]:
    """The metrics.json to put on the card: ``explicit``, else the data dir's for ``version``, else none."""
    from crystal_pipeline.evaluation.results import METRICS_FILE
    from crystal_pipeline.layout import DataLayout

    path = Path(explicit) if explicit else DataLayout.from_env().evaluation_report_dir(version) / METRICS_FILE
    if not path.is_file():
        if explicit:
            raise OSError(f"not found: {path}")
        return None, None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data, path


def _fail(message: str) -> int:
    print(f"crystal-pipeline export: error: {message}", file=sys.stderr)
    return 2
