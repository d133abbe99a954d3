"""How much bf16 labelling changes a plate's labels against fp32, on a trained model, in one run.

Labels one whole plate with ``label_plate`` three times: fp32 (the fast Winograd path), bf16
as ``--precision bf16`` runs it (crystal_pipeline.model.bf16_cpu, output layer kept fp32),
and bf16 in every layer (``keep_fp32=()``), and prints one JSON line per comparison with
fp32:

- ``class_unchanged``: the share of wells whose predicted class (arg-max) is the same;
- ``max_crystal_prob_change``: the largest |change| of the calibrated crystal probability
  (the temperature of the model's artifact applied, as in a report);
- ``hit_wells_differing``: wells in one hit list and not the other at the model's
  threshold (its artifact's crystal_threshold, or ``--threshold``), out of ``hits_fp32``;
- the seconds each labelling took (on a CPU without AMX/AVX512-BF16 bf16 is emulated and
  slow: the agreement figures are still the ones such a CPU would give).

Usage::

    .venv/bin/python bench/precision_agreement.py --model data/models/<version>/model.pt [--plate DIR]

Without ``--plate`` a synthetic 1536-well plate (256 px PNGs, the demo's) is written to a
temp dir outside the repository and removed afterwards.
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
from timing import emit  # noqa: E402  (bench/timing.py)


def agreement(reference, other, threshold: float) -> dict:
    """How ``other`` (PlateLabels) differs from ``reference`` over the same plate's wells."""
    import numpy as np

    if [r.image_id for r in reference.rows] != [r.image_id for r in other.rows]:
        raise ValueError("the two labellings do not cover the same wells in the same order")
    crystal_a = np.array([r.crystal_prob for r in reference.rows])
    crystal_b = np.array([r.crystal_prob for r in other.rows])
    hits_a = {r.image_id for r in reference.rows if r.crystal_prob >= threshold}
    hits_b = {r.image_id for r in other.rows if r.crystal_prob >= threshold}
    return {
        "wells": len(reference.rows),
        "class_unchanged": float(np.mean(reference.probs.argmax(1) == other.probs.argmax(1))) if reference.rows else 1.0,
        "max_crystal_prob_change": float(np.abs(crystal_a - crystal_b).max()) if reference.rows else 0.0,
        "max_prob_change": float(np.abs(reference.probs - other.probs).max()) if reference.rows else 0.0,
        "threshold": threshold,
        "hits_fp32": len(hits_a),
        "hit_wells_differing": len(hits_a ^ hits_b),
    }


def main() -> None:
    import torch

    from crystal_pipeline.ingest.archive import scan_plate
    from crystal_pipeline.model import CrystalNet, calibration_of, load
    from crystal_pipeline.model.bf16_cpu import Bf16CrystalNet
    from crystal_pipeline.model.precision import cpu_has_bf16_units
    from crystal_pipeline.plates.labelling import label_plate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained model.pt (default: a random CrystalNet at 128 px, which says little)")
    parser.add_argument("--plate", type=Path, help="a folder of well images (default: a synthetic 1536-well plate)")
    parser.add_argument("--threshold", type=float, default=None, help="hit threshold (default: the model's)")
    args = parser.parse_args()

    model = load(args.model, "cpu") if args.model else CrystalNet(resolution=128).eval()
    threshold = args.threshold
    if threshold is None:  # the model's hit threshold (0.5 for a random model, which has no artifact)
        threshold = calibration_of(getattr(model, "artifact_meta", None))[1]
    emit(figure="machine", cpu=cpu_name(), bf16_units=cpu_has_bf16_units(), threads=torch.get_num_threads(),
         torch=torch.__version__, model=args.model or "random", resolution=model.resolution)
    root = Path(tempfile.mkdtemp(prefix="crystal_agreement_"))
    try:
        plate = args.plate
        if plate is None:
            from crystal_pipeline.synthetic import write_plate

            plate = root / "AGREE"
            write_plate(plate, "AGREE", seed=21, wells=1536, size=256)
        files = scan_plate(plate)
        runs = {}
        for name, how in (("fp32", "fp32"), ("bf16", "bf16"),
                          ("bf16_all_layers", Bf16CrystalNet.from_model(model, keep_fp32=()))):
            t0 = time.perf_counter()
            if isinstance(how, str):
                runs[name] = label_plate(files, model, precision=how)
            else:
                try:
                    runs[name] = label_plate(files, how)
                finally:
                    how.close()
            emit(figure="labelled", run=name, engine=runs[name].timings.engine,
                 precision=runs[name].timings.precision, seconds=round(time.perf_counter() - t0, 1),
                 images=len(runs[name].rows))
        for name in ("bf16", "bf16_all_layers"):
            found = agreement(runs["fp32"], runs[name], threshold)
            emit(figure="agreement", against="fp32", run=name, **{k: round(v, 6) if isinstance(v, float) else v
                                                                 for k, v in found.items()})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
