"""Our plate time as a fraction of what MARCO's and CHiMP's networks need on the same cores.

MARCO (Bruno et al. 2018) classifies drops with Inception-v3 at 599x599; CHiMP (Diamond
Light Source) with ConvNeXt-Tiny at 384x384. This times torchvision's definitions of those
two networks (random weights, ``weights=None``: the arithmetic, and so the time, does not
depend on the weights) in eager fp32 under ``torch.inference_mode`` on a few batches of
random RGB images, extrapolates to a 1,536-well plate, and in the same run times our
``label_plate`` on a synthetic 1,536-well plate (decode included; precision ``auto``, so the
fast fp32 path where the CPU has no bf16 units). One JSON line per figure; the last one
is the ratios.

torchvision is not a dependency of the project (``pip install 'crystal_pipeline[peers]'``);
without it this prints one line and exits 0. Usage::

    .venv/bin/python bench/peers.py [--threads 2] [--batch 4] [--batches 2] [--repeats 2]
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
from timing import best_of, emit  # noqa: E402  (bench/timing.py)

PLATE = 1536
#: (name, torchvision builder, keyword arguments, input side): the two labs' networks.
PEERS = (
    ("marco_inception_v3", "inception_v3", {"weights": None, "aux_logits": False, "init_weights": False}, 599),
    ("chimp_convnext_tiny", "convnext_tiny", {"weights": None}, 384),
)


def time_peer(builder, kwargs: dict, side: int, batch: int, batches: int, repeats: int) -> float:
    """Seconds per image of the network in eval mode, best of ``repeats`` passes over ``batches``."""
    import torch

    net = builder(**kwargs).eval()
    images = torch.rand(batch, 3, side, side)
    with torch.inference_mode():
        net(images[:1])  # first-call allocations out of the timing

        def run():
            for _ in range(batches):
                net(images)

        return best_of(run, repeats) / (batch * batches)


def time_our_plate(repeats: int, precision: str) -> tuple[float, str, str]:
    """Best-of seconds of label_plate on a synthetic 1536-well 256 px PNG plate, random CrystalNet at 128 px."""
    from crystal_pipeline.ingest.archive import scan_plate
    from crystal_pipeline.model import CrystalNet
    from crystal_pipeline.plates.labelling import label_plate
    from crystal_pipeline.synthetic import write_plate

    root = Path(tempfile.mkdtemp(prefix="crystal_peers_"))
    try:
        write_plate(root / "PEERS", "PEERS", seed=1, wells=PLATE, size=256)
        files = scan_plate(root / "PEERS")
        model = CrystalNet(resolution=128).eval()
        best, labels = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter()
            labels = label_plate(files, model, precision=precision)
            best = min(best, time.perf_counter() - t0)
        return best, labels.timings.engine, labels.timings.precision
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all this process may use)")
    parser.add_argument("--batch", type=int, default=4, help="images per peer batch")
    parser.add_argument("--batches", type=int, default=2, help="peer batches per timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="our plate's precision: auto, fp32, bf16")
    args = parser.parse_args()
    try:
        import torchvision.models as tv_models
    except Exception as exc:  # ImportError, or a wheel whose C ops do not load beside this torch
        print(f"bench/peers.py: torchvision is not importable here ({type(exc).__name__}: {exc}); "
              "install it (pip install 'crystal_pipeline[peers]') to time MARCO's and CHiMP's networks")
        return 0
    import torch
    import torchvision

    from crystal_pipeline.ingest.imaging import default_workers

    threads = args.threads or default_workers()
    torch.set_num_threads(threads)
    emit(figure="machine", cpu=cpu_name(), threads=threads, torch=torch.__version__, torchvision=torchvision.__version__)
    ours_s, engine, precision = time_our_plate(args.repeats, args.precision)
    torch.set_num_threads(threads)  # label_plate restores it; set again for the peers
    emit(figure="ours", what="label_plate, 1536-well plate, decode included", engine=engine, precision=precision,
         s_per_plate=round(ours_s, 2))
    ratios = {}
    for name, builder, kwargs, side in PEERS:
        per_image = time_peer(getattr(tv_models, builder), kwargs, side, args.batch, args.batches, args.repeats)
        plate_s = per_image * PLATE
        ratios[name] = ours_s / plate_s
        emit(figure="peer", network=name, input=f"{side}x{side}", what="model only, eager fp32, random weights",
             images_per_s=round(1 / per_image, 2), s_per_plate=round(plate_s, 1),
             timed_images=args.batch * args.batches)
    emit(figure="ours_over_peer", **{name: round(r, 4) for name, r in ratios.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
