"""Plate labelling throughput: eager vs fast CPU inference, model-only and end to end.

Prints one JSON line per figure. Writes two 1,536-well plates into a temp dir
outside the repository (removed afterwards):

- ``png``: the demo's synthetic plate (256 px grey PNGs, crystal_pipeline.synthetic);
- ``jpeg``: 1280x960 RGB JPEGs, the GSK samples of shared/real_samples repeated.

Figures (best of ``--repeats``; this box is shared, so ratios measured in one run
are the comparable numbers, DESIGN.md "Measuring speed"):

- ``sgemm``: 2048^3 fp32 matmul GFLOP/s on the same threads, for scale;
- ``model_only``: images/s of eager (channels_last) and fast at batch 128, and
  model GFLOP/s (1.04 GFLOP per 128 px image, PERFORMANCE_NOTES) over sgemm GFLOP/s;
- ``decode``: read + decode + crop + resize of the plate alone on labelling's decode
  threads (imaging.decode_threaded), with all threads and with one;
- ``end_to_end``: label_plate (decode overlapped with inference) + the DuckDB write
  of the plate's prediction rows in one transaction, seconds per plate: what the
  ``plate_predictions`` step does (files -> predictions in DuckDB) without Dagster's own
  step overhead; with the ``engine`` and ``precision`` that ran (``--precision``);
- ``cli_over_naive`` (with ``--cli``): ``crystal-pipeline label`` on the first plate as a fresh process
  (``import torch`` and the model load included) over a naive eager fp32 model-only pass
  (NCHW, batch 128) over 1536 images, both timed in this run (issue 19's target ratio);
- ``plate_batch`` (with ``--plates N``): the first plate labelled N times back to back (on
  CUDA after one untimed plate), plates/s (issue 19 item 4: >= 3 plates/s on a GPU box), and whether
  every plate got the first one's labels (``max_prob_change``, ``classes_changed``).

It also runs on a GPU box, whose python has torch, numpy, pyarrow and Pillow only
(``--device cuda``): without DuckDB the warehouse write is left out (``duckdb_write_s``
null), without scipy the synthetic PNG plate is skipped, and ``--plate DIR`` benchmarks
any folder of well images (``A01.png`` ...) instead of the built-in plates. On CUDA the
model-only figure times the eager module on the GPU in fp32 and in bf16 autocast (the fast
path is CPU-only), and ``label_plate`` runs the module in bf16 autocast, batches copied from
pinned memory, decoding on all cores through the process-wide thread pool
(docs/running_on_gpu.md has the command).

Usage::

    .venv/bin/python bench/label_plate.py [--model PATH] [--repeats 3] [--threads 2] [--precision auto] [--cli]
    python bench/label_plate.py --device cuda --plates 20                 # on a GPU box (docs/running_on_gpu.md)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_name  # noqa: E402  (bench/machine.py)
from timing import best_of, best_of_interleaved, emit  # noqa: E402  (bench/timing.py)

# Keep the top level light: --cli runs the label command in a fresh process.

GFLOP_PER_IMAGE_128 = 1.04  # PERFORMANCE_NOTES.md: 521 M multiply-adds at 128 px
REAL_SAMPLES = REPO.parent / "shared" / "real_samples"


def sgemm_gflops(repeats: int) -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    return 2 * 2048**3 / best_of(lambda: a @ b, max(3, repeats)) / 1e9


def make_plates(root: Path, wells: int) -> dict[str, Path]:
    """The built-in plates this machine can make: each one skipped, with the reason, when not."""
    from crystal_pipeline.wells import all_wells

    plates = {}
    try:
        from crystal_pipeline.synthetic import write_plate  # draws with scipy
    except ImportError as exc:
        emit(figure="skipped", plate="png", why=f"the synthetic plate needs {exc.name}, not installed here")
    else:
        png = root / "png" / "BENCH_PNG"
        write_plate(png, "BENCH_PNG", seed=1, wells=wells, size=256)
        plates["png"] = png
    sources = sorted(REAL_SAMPLES.glob("gsk_*.jpeg"))
    if not sources:
        emit(figure="skipped", plate="jpeg", why=f"no gsk_*.jpeg under {REAL_SAMPLES}")
    else:
        jpeg = root / "jpeg" / "BENCH_JPEG"
        jpeg.mkdir(parents=True)
        for i, well in enumerate(all_wells(wells)):
            shutil.copyfile(sources[i % len(sources)], jpeg / f"{well.name}.jpg")
        plates["jpeg"] = jpeg
    if not plates:
        raise SystemExit("no plate to label: pass --plate DIR (a folder of well images)")
    return plates


def write_duckdb(db_path: Path, rows: list[dict]) -> bool:
    """What the plate job's warehouse write costs: replace the plate's rows in one transaction.

    False (nothing written) where DuckDB is not installed, as on a GPU box."""
    try:
        import duckdb
    except ImportError:
        return False
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("""CREATE TABLE IF NOT EXISTS predictions(image_id VARCHAR, plate_id VARCHAR,
            inspection VARCHAR, well VARCHAR, model_version VARCHAR, class_id INTEGER, class_name VARCHAR,
            crystal_prob DOUBLE, probs FLOAT[10], predicted_at TIMESTAMPTZ)""")
        con.execute("BEGIN")
        con.execute("DELETE FROM predictions WHERE plate_id = ? AND model_version = ?",
                    [rows[0]["plate_id"], rows[0]["model_version"]])
        con.register("incoming_rows", table)
        con.execute("""INSERT INTO predictions SELECT image_id, plate_id, inspection, well, model_version,
            class_id, class_name, crystal_prob, probs::FLOAT[10], predicted_at FROM incoming_rows""")
        con.execute("COMMIT")
    finally:
        con.close()
    return True


def main() -> None:
    import torch

    from crystal_pipeline.ingest import imaging
    from crystal_pipeline.model import CrystalNet, load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model.pt (default: random CrystalNet at 128 px; timing is the same)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=imaging.default_workers(), help="model threads")
    parser.add_argument("--wells", type=int, default=1536, choices=(96, 384, 1536))
    parser.add_argument("--skip-eager-e2e", action="store_true", help="end to end with the fast path only")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA the fast CPU path is not timed)")
    parser.add_argument("--plate", type=Path, help="a folder of well images to label instead of the built-in plates")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: label_plate's)")
    parser.add_argument("--precision", default="auto", help="label_plate's precision: auto, fp32 or bf16")
    parser.add_argument("--batch-size", type=int, default=128, help="label_plate's batch size")
    parser.add_argument("--plates", type=int, default=0,
                        help="plate batch: label the first plate this many times back to back (plate_batch figure)")
    parser.add_argument("--cli", action="store_true",
                        help="also time crystal-pipeline label as a fresh process over a naive eager pass (cli_over_naive)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_name(), "cores": imaging.default_workers(), "threads": args.threads,
               "torch": torch.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(args.device)
    emit(figure="machine", **machine)

    model = load(args.model, args.device) if args.model else CrystalNet(resolution=128).eval().to(args.device)
    if args.device.startswith("cuda"):
        bench_model_only_cuda(model, args.repeats)
        bench_plates(model, args.wells, args.repeats, skip_eager=True, plate=args.plate, workers=args.workers,
                     precision=args.precision, batch_size=args.batch_size, batch_plates=args.plates)
        return
    fast = bench_model_only(model, args.threads, args.repeats)
    try:
        bench_plates(model, args.wells, args.repeats, args.skip_eager_e2e, plate=args.plate, workers=args.workers,
                     precision=args.precision, cli_model=(args.model or "") if args.cli else None,
                     batch_size=args.batch_size, batch_plates=args.plates)
    finally:
        fast.close()


def bench_model_only_cuda(model, repeats: int) -> None:
    """Batch-of-512 throughput of the module on the GPU (synchronised), fp32 and bf16 autocast (what
    label_plate runs on CUDA), for the plate figure's model share."""
    import contextlib

    import torch

    res = model.resolution
    batch = torch.randint(0, 256, (512, res, res), dtype=torch.uint8, device=next(model.parameters()).device)
    for path, autocast in (("cuda_eager", contextlib.nullcontext),
                           ("cuda_eager_bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16))):
        def run():
            with torch.inference_mode(), autocast():
                model(batch)
            torch.cuda.synchronize()

        run()
        seconds = best_of(run, max(3, repeats))
        emit(figure="model_only", path=path, batch=512, resolution=res, images_per_s=round(512 / seconds, 1),
             s_per_1536_plate=round(1536 * seconds / 512, 3))


def bench_model_only(model, threads: int, repeats: int):
    """Batch-of-128 throughput of the eager (channels_last) and fast CPU paths, interleaved.

    Returns the FastCrystalNet it built (the caller closes it).
    """
    import torch

    from crystal_pipeline.model import CrystalNet
    from crystal_pipeline.model.fast_cpu import FastCrystalNet

    res = model.resolution
    gflop = GFLOP_PER_IMAGE_128 * (res / 128) ** 2
    sgemm = sgemm_gflops(repeats)
    emit(figure="sgemm", gflops=round(sgemm, 1), size=2048)
    batch = torch.randint(0, 256, (128, res, res), dtype=torch.uint8)
    eager = CrystalNet(resolution=res, augment_params=None).eval()
    eager.load_state_dict(model.state_dict())
    eager.to(memory_format=torch.channels_last)
    eager.channels_last = True
    fast = FastCrystalNet.from_model(model, threads=threads)
    with torch.inference_mode():
        paths = {"eager_channels_last": lambda: eager(batch), "fast": lambda: fast.logits(batch)}
        for fn in paths.values():
            fn()
        seconds = best_of_interleaved(paths, repeats)  # so both see the same neighbours
    rates = {}
    for name, s in seconds.items():
        rate = 128 / s
        rates[name] = rate
        emit(figure="model_only", path=name, batch=128, resolution=res, images_per_s=round(rate, 1),
             s_per_1536_plate=round(1536 / rate, 2), model_gflops=round(rate * gflop, 1),
             ratio_to_sgemm=round(rate * gflop / sgemm, 3))
    emit(figure="model_only_speedup", fast_over_eager=round(rates["fast"] / rates["eager_channels_last"], 2))
    return fast


def bench_plates(model, wells: int, repeats: int, skip_eager: bool, plate: Path | None = None,
                 workers: int | None = None, precision: str = "auto", cli_model: str | None = None,
                 batch_size: int = 128, batch_plates: int = 0) -> None:
    """Decode alone, then label_plate + the DuckDB write end to end, on each kind of plate;
    with ``cli_model`` (a model.pt, or "" for ``model`` saved to a temp artifact) the CLI's
    plate time over a naive eager pass, and with ``batch_plates`` the plate batch, on the first plate."""
    from crystal_pipeline.ingest import imaging
    from crystal_pipeline.ingest.archive import scan_plate

    res = model.resolution
    root = Path(tempfile.mkdtemp(prefix="crystal_bench_"))
    try:
        t0 = time.perf_counter()
        plate_dirs = {"given": plate} if plate is not None else make_plates(root, wells)
        emit(figure="setup", seconds=round(time.perf_counter() - t0, 1), root=str(root))
        for kind, plate_dir in plate_dirs.items():
            files = scan_plate(plate_dir)
            if not files:
                raise SystemExit(f"no images under {plate_dir}")
            paths_only = [f.path for f in files]
            for threads in dict.fromkeys((imaging.default_workers() if workers is None else workers, 1)):
                decode_s = best_of(lambda: sum(1 for _ in imaging.decode_threaded(paths_only, res, threads)),
                                   repeats)
                emit(figure="decode", plate=kind, threads=threads, images=len(files), seconds=round(decode_s, 2),
                     images_per_s=round(len(files) / decode_s, 1))
            for cpu_path in ("fast",) if skip_eager else ("fast", "eager"):
                _bench_end_to_end(root, kind, files, model, cpu_path, repeats, workers, precision, batch_size)
            if batch_plates:
                _bench_plate_batch(kind, files, model, batch_plates, workers, precision, batch_size)
                batch_plates = 0
            if cli_model is not None:
                _bench_cli_over_naive(root, plate_dir, model, cli_model, precision, repeats)
                cli_model = None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bench_cli_over_naive(root: Path, plate_dir: Path, model, model_path: str, precision: str, repeats: int) -> None:
    """``crystal-pipeline label`` as a fresh process (what a user waits for) over a naive eager fp32
    model-only pass over 1536 images (NCHW, batch 128, intra-op threads), best of ``repeats`` each."""
    import subprocess

    import torch

    from crystal_pipeline.model import CrystalNet, save_artifact

    if not model_path:
        model_path = str(save_artifact(root / "cli_model" / "model.pt", model.cpu(), trained_on="synthetic"))
    command = [sys.executable, "-m", "crystal_pipeline", "label", str(plate_dir), "--model", model_path,
               "--out", str(root / "cli_report"), "--precision", precision, "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}

    def cli():
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)

    res = model.resolution
    naive = CrystalNet(resolution=res, augment_params=None).eval()
    naive.load_state_dict(model.state_dict())
    images = torch.randint(0, 256, (1536, res, res), dtype=torch.uint8)

    def naive_pass():
        with torch.inference_mode():
            for i in range(0, len(images), 128):
                naive(images[i:i + 128])

    seconds = best_of_interleaved({"cli": cli, "naive": naive_pass}, repeats)
    emit(figure="cli_over_naive", cli_s=round(seconds["cli"], 2), naive_eager_fp32_1536_s=round(seconds["naive"], 2),
         ratio=round(seconds["cli"] / seconds["naive"], 3), precision=precision, resolution=res, repeats=repeats,
         what="crystal-pipeline label, process start included, over an eager fp32 model-only pass")


def _bench_plate_batch(kind: str, files, model, plates: int, workers: int | None, precision: str,
                       batch_size: int) -> None:
    """``plates`` plates labelled back to back, on CUDA after one untimed plate (CUDA start-up,
    cuDNN's first kernels; on a CPU the end-to-end figures before it warmed the pools): the same
    plate's files each time, read from the page cache as a plate the imager has just written
    would be. Every plate's labels are compared with the first's."""
    from crystal_pipeline.plates.labelling import label_plate

    def label():
        return label_plate(files, model, workers=workers, precision=precision, batch_size=batch_size)

    if next(model.parameters()).device.type == "cuda":
        label()
    t0 = time.perf_counter()
    runs = [label() for _ in range(plates)]
    seconds = time.perf_counter() - t0
    first = runs[0]
    first_probs = [row.probs for row in first.rows]
    max_change = max((abs(a - b) for run in runs[1:] for row, probs in zip(run.rows, first_probs)
                      for a, b in zip(row.probs, probs)), default=0.0)
    changed = sum(row.class_id != ref.class_id for run in runs[1:] for row, ref in zip(run.rows, first.rows))
    emit(figure="plate_batch", plate=kind, plates=plates, images_per_plate=len(first.rows),
         quarantined_per_plate=len(first.quarantined), seconds=round(seconds, 3),
         plates_per_s=round(plates / seconds, 2), s_per_plate=round(seconds / plates, 3),
         model_s=round(sum(r.timings.model_s for r in runs), 3),
         decode_wait_s=round(sum(r.timings.decode_wait_s for r in runs), 3), path=first.timings.path,
         precision=first.timings.precision, batch_size=batch_size,
         workers=workers if workers is not None else "default", max_prob_change=max_change,
         classes_changed=changed)


def _bench_end_to_end(root: Path, kind: str, files, model, cpu_path: str, repeats: int,
                      workers: int | None, precision: str = "auto", batch_size: int = 128) -> None:
    from crystal_pipeline.plates.labelling import label_plate

    best = None
    for i in range(repeats):
        t0 = time.perf_counter()
        labels = label_plate(files, model, cpu_path=cpu_path, workers=workers, precision=precision,
                             batch_size=batch_size)
        t_label = time.perf_counter() - t0
        t1 = time.perf_counter()
        written = write_duckdb(root / f"warehouse_{kind}_{cpu_path}_{i}.duckdb", labels.prediction_rows("bench"))
        t_db = time.perf_counter() - t1 if written else None
        total = t_label + (t_db or 0.0)
        if best is None or total < best[0]:
            best = (total, t_label, t_db, labels)
    total, t_label, t_db, labels = best
    emit(figure="end_to_end", plate=kind, path=labels.timings.path, precision=labels.timings.precision,
         images=len(labels.rows),
         quarantined=len(labels.quarantined), s_per_plate=round(total, 2),
         images_per_s=round(len(labels.rows) / total, 1), label_s=round(t_label, 2),
         duckdb_write_s=None if t_db is None else round(t_db, 3), model_s=round(labels.timings.model_s, 2),
         decode_wait_s=round(labels.timings.decode_wait_s, 2), batch_size=batch_size, repeats=repeats)


if __name__ == "__main__":
    main()
