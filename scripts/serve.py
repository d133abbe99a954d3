"""`make serve`: the production-like service in the foreground (docs/deployment.md).

Postgres (embedded under <data_dir>/postgres, or CRYSTAL_POSTGRES_URL), the code
server, dagster-daemon and dagster-webserver on CRYSTAL_SERVE_PORT (default 3000).
Ctrl-C or SIGTERM stops every process it started.
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crystal_pipeline.service.instance import InstanceSettings  # noqa: E402
from crystal_pipeline.service.supervisor import ServeConfig, Service  # noqa: E402


def main(argv=None) -> int:
    defaults = InstanceSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="webserver port (default: $CRYSTAL_SERVE_PORT or 3000)")
    parser.add_argument("--host", help="webserver address (default: $CRYSTAL_SERVE_HOST or 127.0.0.1)")
    parser.add_argument("--postgres-port", type=int, help="port of the embedded Postgres (default: a free one)")
    parser.add_argument("--max-runs", type=int, default=defaults.max_concurrent_runs,
                        help="runs in progress at once (default: %(default)s)")
    parser.add_argument("--max-plate-runs", type=int, default=defaults.max_plate_runs,
                        help="plate runs in progress at once (default: %(default)s)")
    parser.add_argument("--max-retries", type=int, default=defaults.max_retries,
                        help="re-executions of a run whose worker crashed (default: %(default)s)")
    parser.add_argument("--monitoring-interval", type=int, default=defaults.monitoring_interval_s,
                        help="seconds between run-monitoring passes (default: %(default)s)")
    parser.add_argument("--free-slots-after", type=int, default=defaults.free_slots_after_run_end_s,
                        help="seconds after a crashed run ends before its pool slots are freed "
                             "(default: %(default)s)")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="on stop, seconds to let runs in flight finish (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s serve %(levelname)s: %(message)s")
    settings = InstanceSettings(max_concurrent_runs=args.max_runs, max_plate_runs=args.max_plate_runs,
                                max_retries=args.max_retries, monitoring_interval_s=args.monitoring_interval,
                                free_slots_after_run_end_s=args.free_slots_after)
    config = ServeConfig.from_env(REPO, port=args.port, host=args.host, postgres_port=args.postgres_port,
                                  instance=settings, drain_s=args.drain)
    return Service(config).run()


if __name__ == "__main__":
    sys.exit(main())
