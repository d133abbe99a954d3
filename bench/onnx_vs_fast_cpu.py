"""ONNX Runtime against the fast CPU path (crystal_pipeline.model.fast_cpu) on one plate, in one run.

Prints one JSON line per figure. Exports the model (``--model``, or a random CrystalNet at
128 px: timing does not depend on the weights) with ``crystal_pipeline.model.onnx_export``,
writes one synthetic plate (256 px grey PNGs) into a temp dir outside the repository, and:

- ``model_only``: the plate's decoded pixels through each engine in batches of 128 (both
  return calibrated probabilities), best of ``--repeats``, interleaved so both see the same
  neighbours on this shared box; the max |difference| of their probabilities;
- ``end_to_end``: ``label_plate`` (decode overlapped with inference) with each engine.

No Dagster and no DuckDB. Usage::

    .venv/bin/python bench/onnx_vs_fast_cpu.py [--model PATH] [--wells 384] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_name  # noqa: E402  (bench/machine.py)
from timing import best_of_interleaved, emit  # noqa: E402  (bench/timing.py)

BATCH = 128


def _in_batches(predict, pixels):
    import numpy as np

    return np.concatenate([predict(pixels[i:i + BATCH]) for i in range(0, len(pixels), BATCH)])


def main() -> None:
    import numpy as np
    import onnxruntime
    import torch

    from crystal_pipeline.ingest import imaging
    from crystal_pipeline.ingest.archive import scan_plate
    from crystal_pipeline.model import CrystalNet, load, save_artifact
    from crystal_pipeline.model.fast_cpu import FastCrystalNet
    from crystal_pipeline.model.inference import calibrated
    from crystal_pipeline.model.artifact import calibration_of
    from crystal_pipeline.model.onnx_engine import OnnxCrystalNet
    from crystal_pipeline.model.onnx_export import export_onnx
    from crystal_pipeline.plates.labelling import label_plate
    from crystal_pipeline.synthetic import write_plate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model.pt (default: random CrystalNet at 128 px)")
    parser.add_argument("--wells", type=int, default=384, choices=(96, 384, 1536))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=imaging.default_workers(), help="model threads, both engines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emit(figure="machine", cpu=cpu_name(), cores=imaging.default_workers(), threads=args.threads,
         torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    root = Path(tempfile.mkdtemp(prefix="crystal_onnx_bench_"))
    try:
        artifact = Path(args.model) if args.model else save_artifact(
            root / "random" / "model.pt", CrystalNet(resolution=128).eval(), trained_on="synthetic")
        t0 = time.perf_counter()
        onnx_path = export_onnx(artifact, root / "model.onnx").onnx_path
        emit(figure="export", seconds=round(time.perf_counter() - t0, 1), mb=round(onnx_path.stat().st_size / 1e6, 1))
        model = load(artifact, "cpu")
        res = model.resolution
        write_plate(root / "BENCH", "BENCH", seed=1, wells=args.wells, size=256)
        files = scan_plate(root / "BENCH")
        pixels = np.stack([p for _, p in imaging.decode_many([f.path for f in files], res)])
        fast = FastCrystalNet.from_model(model, threads=args.threads)
        engine = OnnxCrystalNet(onnx_path, threads=args.threads)
        temperature = calibration_of(model.artifact_meta)[0]
        engines = {"fast_cpu": calibrated(fast.predict_proba, temperature), "onnxruntime": engine.predict_proba}
        try:
            _model_only(engines, pixels, args.repeats, res)
            # label_plate builds its own fast path from the torch model; the ONNX engine it takes as is.
            for name, net in (("fast_cpu", model), ("onnxruntime", engine)):
                best = float("inf")
                for _ in range(args.repeats):
                    labels = label_plate(files, net, batch_size=BATCH)
                    best = min(best, labels.timings.total_s)
                emit(figure="end_to_end", engine=name, path=labels.timings.path, images=len(files),
                     seconds=round(best, 2), images_per_s=round(len(files) / best, 1))
        finally:
            fast.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _model_only(engines, pixels, repeats: int, res: int) -> None:
    import numpy as np

    outputs = {name: _in_batches(fn, pixels) for name, fn in engines.items()}  # warm-up, and the comparison
    seconds = best_of_interleaved({name: (lambda fn=fn: _in_batches(fn, pixels)) for name, fn in engines.items()},
                                  repeats)
    for name, s in seconds.items():
        emit(figure="model_only", engine=name, images=len(pixels), resolution=res, batch=BATCH,
             seconds=round(s, 3), images_per_s=round(len(pixels) / s, 1))
    emit(figure="model_only_ratio", onnx_over_fast=round(seconds["fast_cpu"] / seconds["onnxruntime"], 3),
         max_abs_prob_diff=float(np.abs(outputs["onnxruntime"] - outputs["fast_cpu"]).max()))


if __name__ == "__main__":
    main()
