"""The serve profile's Dagster instance: ``dagster.yaml`` and ``workspace.yaml`` as text.

Written by the supervisor into the profile's own ``DAGSTER_HOME`` (default
``<data_dir>/dagster_serve``, apart from ``make ui``'s SQLite ``dagster_home``) on
every start, so the file always matches the flags it was started with.

What the instance does, and why:

- storage in PostgreSQL (dagster-postgres): runs, event logs and schedules/sensor
  cursors survive restarts and can be shared by processes on several machines;
- the QueuedRunCoordinator: the daemon launches queued runs, at most
  ``max_concurrent_runs`` at once, at most ``max_plate_runs`` with the tag ``plate``
  (the plate sensor's runs), and one run per plate at a time (a corrected plate
  waits for the run of its earlier version);
- pools (op-level concurrency): ``duckdb`` (the warehouse's single writer) and
  ``gpu`` (training), both limit 1, and ``plate_writes``, limit ``max_plate_runs``: with
  the DuckLake warehouse (``CRYSTAL_WAREHOUSE=ducklake``) the plate runs' warehouse
  steps take it instead of ``duckdb``, so that many plates write at once while ingest
  and consensus stay serialized; the supervisor sets every limit at start so they show
  in the UI before first use;
- run monitoring: frees the pool slots a crashed run held, after a short delay;
- run retries: a run whose worker crashed (killed, out of memory, the machine
  went away) is re-executed from the failure; a run that failed because an asset
  or check raised is not (retrying a deterministic error only repeats it), except
  the plate runs: ``label_plate_job`` carries the tag
  ``dagster/retry_on_asset_or_op_failure: true`` (a warehouse lock held past its wait
  fails a step, and the plate's next try succeeds). Past its retries, the sensor and
  ``crystal-pipeline doctor`` list the plate as failed, with the command to re-run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class InstanceSettings:
    """The knobs of the serve profile (defaults are the production ones)."""

    max_concurrent_runs: int = 4
    max_plate_runs: int = 2
    duckdb_pool_limit: int = 1
    gpu_pool_limit: int = 1
    max_retries: int = 2
    dequeue_interval_s: int = 2
    monitoring_interval_s: int = 30
    free_slots_after_run_end_s: int = 30

    def __post_init__(self) -> None:
        for name in ("max_concurrent_runs", "max_plate_runs", "duckdb_pool_limit", "gpu_pool_limit",
                     "dequeue_interval_s", "monitoring_interval_s", "free_slots_after_run_end_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")


PLATE_TAG = "plate"  # set by incoming_plates_sensor on every plate run
POOLS = ("duckdb", "gpu", "plate_writes")


def _q(value: str) -> str:
    """A YAML scalar: JSON strings are valid YAML."""
    return json.dumps(value)


def storage_yaml(postgres_url: Optional[str]) -> str:
    """``storage:`` for an explicit URL (the embedded server), else the one in ``CRYSTAL_POSTGRES_URL``
    read by Dagster at load time (so an external server's password is never written to disk)."""
    url = _q(postgres_url) if postgres_url else "\n        env: CRYSTAL_POSTGRES_URL"
    return f"storage:\n  postgres:\n    postgres_url:{' ' + url if postgres_url else url}\n"


def dagster_yaml(settings: InstanceSettings, postgres_url: Optional[str]) -> str:
    s = settings
    return f"""\
# Written by crystal_pipeline.service (make serve) on every start; edits are overwritten.
# The serve profile: Postgres storage, queued runs with limits, pools, monitoring, retries.
{storage_yaml(postgres_url)}
# The QueuedRunCoordinator: runs wait in the queue and the daemon launches them within
# the limits under `concurrency: runs` (Dagster 1.13 keeps the limits there, next to the pools).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: {s.dequeue_interval_s}

run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher

concurrency:
  runs:
    max_concurrent_runs: {s.max_concurrent_runs}
    tag_concurrency_limits:
      # all plate runs together
      - key: {PLATE_TAG}
        limit: {s.max_plate_runs}
      # one run per plate at a time
      - key: {PLATE_TAG}
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    default_limit: 1
    granularity: op
    # one more run may start its worker while another holds the pool slot it needs
    op_granularity_run_buffer: 1

run_monitoring:
  enabled: true
  poll_interval_seconds: {s.monitoring_interval_s}
  free_slots_after_run_end_seconds: {s.free_slots_after_run_end_s}
  max_resume_run_attempts: 0

run_retries:
  enabled: {str(s.max_retries > 0).lower()}
  max_retries: {s.max_retries}
  retry_on_asset_or_op_failure: false

telemetry:
  enabled: false

# no newsletter sign-up dialog over the UI of a lab service
nux:
  enabled: false
"""


def workspace_yaml(code_server_host: str, code_server_port: int, location_name: str) -> str:
    """The webserver and the daemon load the code location from the one code server."""
    return f"""\
# Written by crystal_pipeline.service (make serve): the code location is served by
# `dagster api grpc`, started by the same supervisor.
load_from:
  - grpc_server:
      host: {_q(code_server_host)}
      port: {code_server_port}
      location_name: {_q(location_name)}
"""
