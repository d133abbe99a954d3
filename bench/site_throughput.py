"""A site's throughput: plates per hour through ``make serve``, file warehouse vs the lake (issue 21).

For each configuration (warehouse backend, k concurrent plate runs) the bench starts the
service as ``make serve`` does (``scripts/serve.py``: Postgres, code server, daemon,
webserver) on a fresh copy of one trained data dir, drops N plates into its incoming folder
at once, and times from the drop to the end of the last plate's successful run, as the
instance's own run records say. Every plate must end with one prediction row per well
(read back from the backend under test), or the configuration counts as failed. With the
lake, the trained warehouse is first moved into it with ``crystal-pipeline warehouse migrate``'s
own function, on the service's Postgres, so both backends label with the same model.

    python bench/site_throughput.py --plates 8 --wells 384 --configs file:1 file:2 ducklake:1 ducklake:2 ducklake:4
    python bench/site_throughput.py --plates 6 --wells 1536 --model-resolution 128 --configs file:2 ducklake:2

What it does not measure: a cluster (all workers share this machine's cores, so k above the
core count measures contention, not scaling), and imager write time (the plates are whole
when dropped). One JSON line per configuration; ``--json`` collects them in a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the Dagster code location (definitions, resources) loads from the checkout
sys.path.insert(0, str(REPO / "bench"))

from machine import describe  # noqa: E402
from timing import emit  # noqa: E402

from crystal_pipeline.service.postgres import free_port  # noqa: E402

SENSOR_INTERVAL_S = 5  # production default is 30 s; a shorter tick keeps the sensor out of the figure


def clean_env(data: Path, backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYSTAL_", "DAGSTER_"))}
    env.update(CRYSTAL_DATA_DIR=str(data), CRYSTAL_WAREHOUSE=backend, CRYSTAL_SENSOR_INTERVAL_S=str(SENSOR_INTERVAL_S))
    return env


def train_template(root: Path, seed: int, resolution: int) -> Path:
    """A data dir with a small archive ingested, tensors prepared and a smoke model promoted
    (file warehouse), at ``resolution`` (the labelling cost is the network's at that input
    size, whatever its weights). Its model file stays here; each configuration copies the rest."""
    import dagster as dg

    import definitions
    from crystal_pipeline.synthetic import write_archive
    from resources import StorageResource, build_resources

    data = root / "template"
    write_archive(data / "raw", plates=2, seed=seed, wells=96, size=64)
    result = dg.materialize(
        [*definitions.all_assets], resources=build_resources(StorageResource(data_dir=str(data))),
        instance=dg.DagsterInstance.ephemeral(), selection=dg.AssetSelection.groups("ingest", "prepare", "train"),
        run_config={"ops": {"crystalnet_model": {"config": {
            "preset": "smoke", "accuracy_floor": 0.0, "overrides": {"resolution": str(resolution)}}}}})
    if not result.success:
        raise SystemExit("training the template model failed")
    return data


class Service:
    """``scripts/serve.py`` on one data dir, as ``make serve`` starts it."""

    def __init__(self, data: Path, backend: str, plate_runs: int):
        self.data, self.backend = data, backend
        self.log_path = data.parent / "serve.log"
        self.home = data / "dagster_serve"
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "scripts/serve.py", "--port", str(self.port), "--max-runs", str(plate_runs + 1),
             "--max-plate-runs", str(plate_runs), "--monitoring-interval", "5", "--drain", "5"],
            cwd=REPO, env=clean_env(data, backend), stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while b"crystal_pipeline service ready" not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(180)


def warehouse_of(data: Path, backend: str):
    """The data dir's warehouse on ``backend``, whatever this process's CRYSTAL_WAREHOUSE says."""
    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.warehouse import open_warehouse

    return open_warehouse(dataclasses.replace(DataLayout.under(data), warehouse_backend=backend))


def step_seconds(instance, run_ids: list[str]) -> dict[str, list[float]]:
    """Each step's durations over the runs, from the instance's STEP_SUCCESS events: where a
    plate run's time goes (ingest of the files, labelling, the write, the report)."""
    import dagster as dg

    out: dict[str, list[float]] = {}
    for run_id in run_ids:
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            data = event.dagster_event.event_specific_data
            out.setdefault(event.step_key, []).append(data.duration_ms / 1000.0)
    return out


def run_configuration(template: Path, staging: Path, plates: list[str], wells: int, backend: str, k: int,
                      timeout_s: float) -> dict:
    import dagster as dg

    from crystal_pipeline.warehouse.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix=f"site-{backend}-{k}-", dir="/tmp"))
    root.chmod(0o755)  # Postgres runs as the postgres user when this runs as root
    data = root / "data"
    shutil.copytree(template, data, ignore=shutil.ignore_patterns("dagster_home", "dagster_serve", "postgres"))
    os.environ["CRYSTAL_DATA_DIR"] = str(data)  # target_for's embedded-server lookup reads the layout
    service = Service(data, backend, k)
    try:
        if backend == "ducklake":
            migrate(warehouse_of(data, "file"), warehouse_of(data, backend))
        incoming = data / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        for key in plates:
            shutil.copytree(staging / key, incoming / f".{key}.part")
            os.rename(incoming / f".{key}.part", incoming / key)
        instance = dg.DagsterInstance.from_config(str(service.home))
        deadline = time.monotonic() + timeout_s
        while True:
            records = instance.get_run_records(dg.RunsFilter(job_name="label_plate_job"))
            done = {r.dagster_run.tags.get("plate"): r for r in records
                    if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS}
            if set(plates) <= set(done):
                break
            if time.monotonic() > deadline or service.process.poll() is not None:
                statuses = sorted((r.dagster_run.tags.get("plate"), r.dagster_run.status.value) for r in records)
                return {"backend": backend, "plate_runs": k, "failed": f"not all plates done: {statuses}"}
            time.sleep(1)
        runs = [done[key] for key in plates]
        ends = sorted(r.end_time for r in runs)
        starts = sorted(r.start_time for r in runs)
        durations = [r.end_time - r.start_time for r in runs]
        overlap = max(sum(1 for r in runs if r.start_time <= t < r.end_time) for t in starts)
        steps = step_seconds(instance, [r.dagster_run.run_id for r in runs])
        instance.dispose()
        rows = warehouse_of(data, backend).query_df(
            "SELECT plate_id, count(*) AS n, count(DISTINCT image_id) AS d FROM predictions GROUP BY plate_id")
        counts = {row.plate_id: (int(row.n), int(row.d)) for row in rows.itertuples()}
        complete = all(counts.get(key) == (wells, wells) for key in plates)
        wall = ends[-1] - t0
        return {"backend": backend, "plate_runs": k, "plates": len(plates), "wells": wells,
                "wall_s": round(wall, 1), "plates_per_hour": round(len(plates) * 3600 / wall, 1),
                # between the first and the last plate done: the rate once the queue is flowing,
                # without the sensor's two ticks and the first worker's start
                "steady_plates_per_hour": (round((len(ends) - 1) * 3600 / (ends[-1] - ends[0]), 1)
                                           if len(ends) > 1 and ends[-1] > ends[0] else None),
                "first_start_after_drop_s": round(starts[0] - t0, 1),
                "run_s_median": round(statistics.median(durations), 1),
                "most_runs_at_once": overlap, "every_row_once": complete,
                "step_s_median": {step: round(statistics.median(v), 2) for step, v in sorted(steps.items())}}
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=6)
    parser.add_argument("--wells", type=int, default=384, choices=(96, 384, 1536))
    parser.add_argument("--size", type=int, default=128, help="rows of each picture (the HWI twin's 128)")
    parser.add_argument("--configs", nargs="+", default=["file:1", "file:2", "ducklake:1", "ducklake:2", "ducklake:4"],
                        help="backend:k pairs, k = concurrent plate runs")
    parser.add_argument("--model-resolution", type=int, default=32,
                        help="the model's input (32: the smoke preset's; 128: the paper's working size)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per configuration")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="site-throughput-", dir="/tmp"))
    work.chmod(0o755)
    figures = []
    try:
        t = time.perf_counter()
        template = train_template(work, args.seed, args.model_resolution)
        from crystal_pipeline.synthetic import write_plate

        keys = [f"SITE{i:02d}" for i in range(1, args.plates + 1)]
        for i, key in enumerate(keys):
            write_plate(work / "staging" / key, key, seed=100 + i, wells=args.wells, size=args.size)
        print(f"# {describe()}; template and {args.plates} plates of {args.wells} wells ready in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        for config in args.configs:
            backend, _, k = config.partition(":")
            figure = run_configuration(template, work / "staging", keys, args.wells, backend, int(k or 1),
                                       args.timeout)
            figure["cpu"] = describe()
            figure["model_resolution"] = args.model_resolution
            emit(bench="site_throughput", **figure)
            figures.append(figure)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if all(f.get("every_row_once") for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
