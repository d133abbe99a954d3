"""Demo step: an imager drops a new plate into the incoming folder; the real sensor finds it.

The `dagster asset materialize` CLI cannot add dynamic partitions, so this script
does what the daemon does on each tick, once, against $DAGSTER_HOME's instance:
evaluate `incoming_plates_sensor`, apply its partition requests, and execute its run
requests in process. In `make ui` the daemon runs the same sensor every 30 s.
"""

import argparse
import csv
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import definitions  # noqa: E402
from crystal_pipeline.layout import DataLayout  # noqa: E402
from crystal_pipeline.synthetic import write_plate  # noqa: E402
from crystal_pipeline.synthetic.archive import archive_settings  # noqa: E402
from resources import build_resources  # noqa: E402


def drop_plate(layout: DataLayout, plate_id: str, seed: int, wells: int) -> Path:
    """Write a synthetic plate as an imager would, and describe it in the archive's plates.csv."""
    plate_dir = layout.incoming_dir / plate_id
    if not plate_dir.exists():  # drawn by the archive's own imager, at its size and difficulty
        write_plate(plate_dir, plate_id, seed, wells=wells, **archive_settings(layout.raw_dir))
    plates_csv = layout.raw_dir / "plates.csv"
    if plates_csv.exists() and plate_id not in plates_csv.read_text():
        with plates_csv.open("a", newline="") as handle:
            csv.writer(handle).writerow([plate_id, "lysozyme", f"synthetic_{wells}", "", ""])
    return plate_dir


def tick(instance: dg.DagsterInstance, cursor: str | None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources()) as context:
        return definitions.incoming_plates_sensor(context)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plate-id", default="SYN0101")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--wells", type=int, default=1536)
    args = parser.parse_args()
    layout = DataLayout.from_env()
    plate_dir = drop_plate(layout, args.plate_id, args.seed, args.wells)
    print(f"== plate {args.plate_id} written to {plate_dir}")

    instance = dg.DagsterInstance.get()
    job = definitions.defs.resolve_job_def("label_plate_job")
    cursor = None
    keys = []
    for number in (1, 2):  # a plate must look the same on two ticks before it runs
        result = tick(instance, cursor)
        cursor = result.cursor
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        print(f"   sensor tick {number}: {len(result.run_requests)} run(s) requested"
              + (f"; {result.skip_reason.skip_message}" if result.skip_reason else ""))
        for request in result.run_requests:
            run = job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                         tags={**request.tags, "dagster/run_key": request.run_key})
            if not run.success:
                print(f"run for {request.partition_key} failed", file=sys.stderr)
                return 1
            keys.append(request.partition_key)
    for key in keys:
        print(f"== plate {key} labelled. Plate report: {layout.plate_report_html(key)}")
        print(f"   hit list: {layout.plate_hits_csv(key)}")
    return 0 if keys else 1


if __name__ == "__main__":
    raise SystemExit(main())
