"""``crystal-pipeline doctor``: one line per thing the service depends on; exit 1 if one fails.

Checks the serve profile (``make serve``): its instance storage, the daemon's
heartbeats, plate runs failed past their retries (each with the command that re-runs
it), the warehouse's lock, the production model, the free disk. See
:mod:`crystal_pipeline.service.health` for what each check means.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the data directory (default: $CRYSTAL_DATA_DIR or ./data)")
    parser.add_argument("--dagster-home", help="the service's DAGSTER_HOME (default: $CRYSTAL_SERVE_HOME "
                                               "or <data_dir>/dagster_serve)")
    parser.add_argument("--postgres-url", default=None,
                        help="instance database (default: $CRYSTAL_POSTGRES_URL, else the embedded server)")
    parser.add_argument("--heartbeat-max-age", type=float, default=120.0, metavar="S",
                        help="oldest acceptable daemon heartbeat, seconds (default: %(default)s)")
    parser.add_argument("--lock-wait", type=float, default=10.0, metavar="S",
                        help="how long the warehouse may stay locked, seconds (default: %(default)s)")
    parser.add_argument("--min-free-gb", type=float, default=5.0,
                        help="free disk needed under the data dir (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.service.health import Target, run_checks
    from crystal_pipeline.service.supervisor import serve_home

    layout = DataLayout.under(args.data_dir) if args.data_dir else DataLayout.from_env()
    home = Path(args.dagster_home).resolve() if args.dagster_home else serve_home(layout)
    target = Target(layout, home, args.postgres_url or os.environ.get("CRYSTAL_POSTGRES_URL") or None)
    checks = run_checks(target, heartbeat_max_age_s=args.heartbeat_max_age, lock_wait_s=args.lock_wait,
                        min_free_gb=args.min_free_gb)
    for check in checks:
        print(check.line(), flush=True)
    failed = [c.name for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
