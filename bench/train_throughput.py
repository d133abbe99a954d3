"""Training throughput of CrystalNet (paper preset, 128 px) on the current device.

Prints one JSON line per figure. On a CPU it also times a 2048^3 sgemm in the
same run and reports the ratio, because on a shared machine only ratios measured
together mean anything (DESIGN.md, "Measuring speed"). On a GPU the timing uses
CUDA events and the same bf16 autocast + channels_last path as training.

    python bench/train_throughput.py                 # defaults per device
    python bench/train_throughput.py --updates 50 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from crystal_pipeline.model import augment, feature_size, resolve_device
from crystal_pipeline.training import (
    BatchPlan,
    TrainConfig,
    autocast_context,
    make_model,
    make_optimizer,
    train_step,
)
from crystal_pipeline.training.steps import training_precision


def forward_flops(resolution: int) -> float:
    """FLOPs (2 x multiply-adds) of one image's forward pass, from the layer shapes."""
    side = augment.crop_size(resolution)
    macs = side * side * 64 * 1 * 25  # conv1
    macs += (side // 2) ** 2 * 64 * 64 * 25  # conv2
    macs += (side // 4) ** 2 * 128 * 64 * 25  # conv3
    f = feature_size(resolution)
    macs += f * f * 128 * 128 * 9  # conv4
    macs += 128 * f * f * 2048 + 2048 * 2048 + 2048 * 10  # FC layers
    return 2.0 * macs


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(config: TrainConfig, device: torch.device, warmup: int, updates: int) -> float:
    """Images/s over ``updates`` training steps after ``warmup`` steps."""
    model = make_model(config).to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    net = torch.compile(model) if config.compile else model
    optimizer = make_optimizer(model, config)
    n_images = config.batch_size * 4
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, config.resolution, config.resolution), dtype=torch.uint8,
                           generator=gen).to(device)
    # 0-based targets, as the loss takes them (the tensors hold class ids 1..10)
    targets = torch.randint(0, config.num_classes, (n_images,), generator=gen).to(device)
    # the targets too: a preset that samples class-balanced batches (demo) draws from them
    plan = BatchPlan(n_images, config, device, targets=targets.cpu().numpy())
    precision = training_precision(config, device)
    autocast = autocast_context(device, precision.precision)
    model.train()

    def steps(first: int, count: int) -> None:
        for u in range(first, first + count):
            idx = plan.indices(u)
            train_step(net, optimizer, images[idx], targets[idx], plan.theta(u), autocast)

    steps(0, warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        steps(warmup, updates)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        t0 = time.perf_counter()
        steps(warmup, updates)
        seconds = time.perf_counter() - t0
    return updates * config.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--updates", type=int, default=None, help="timed updates (default: 50 GPU, 4 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates (default: 10 GPU, 1 CPU)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="TrainConfig.precision: auto is bf16 on CUDA and on CPUs with AMX/AVX512-BF16")
    args = parser.parse_args()

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    overrides = {"compile": args.compile, "precision": args.precision}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    config = TrainConfig.from_preset(args.preset, overrides)
    updates = args.updates or (50 if gpu else 4)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    machine = torch.cuda.get_device_name(device) if gpu else cpu_name()
    common = {"bench": "train_throughput", "device": str(device), "machine": machine,
              "torch": str(torch.__version__), "preset": config.preset, "resolution": config.resolution,
              "batch_size": config.batch_size, "compile": config.compile,
              "threads": torch.get_num_threads() if not gpu else None,
              "date": time.strftime("%Y-%m-%d")}
    gemm_before = sgemm_gflops() if not gpu else None
    images_per_s = measure(config, device, warmup, updates)
    flops_per_image = 3.0 * forward_flops(config.resolution)  # forward + backward ~ 3x forward
    print(json.dumps({**common, "figure": "train_images_per_s", "value": round(images_per_s, 2),
                      "timed_updates": updates, "warmup_updates": warmup, "precision": training_precision(config, device).precision}))
    print(json.dumps({**common, "figure": "train_gflop_per_s", "value": round(images_per_s * flops_per_image / 1e9, 2),
                      "gflop_per_image_fwd_bwd": round(flops_per_image / 1e9, 3)}))
    if not gpu:
        gemm = (gemm_before + sgemm_gflops()) / 2.0  # bracket the training run
        print(json.dumps({**common, "figure": "sgemm_2048_gflop_per_s", "value": round(gemm, 2),
                          "before": round(gemm_before, 2)}))
        print(json.dumps({**common, "figure": "train_fraction_of_sgemm",
                          "value": round(images_per_s * flops_per_image / 1e9 / gemm, 4)}))
        print(json.dumps({**common, "figure": "train_images_per_s_per_sgemm_gflop_per_s",
                          "value": round(images_per_s / gemm, 4)}))


if __name__ == "__main__":
    main()
