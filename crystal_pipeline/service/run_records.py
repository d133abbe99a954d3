"""What the Dagster instance's own tables say, read with plain SQL (no Dagster import).

``crystal-pipeline doctor`` must answer without the orchestrator's libraries (and
without starting an instance that would run migrations or daemons' code): it reads
two things straight from the run storage, the same tables in PostgreSQL (the serve
profile) and in SQLite (``<DAGSTER_HOME>/history/runs.db``, ``make ui``):

- ``daemon_heartbeats``: one row per daemon type, its body the serialized heartbeat
  (JSON with the ``timestamp`` in seconds since the epoch);
- ``runs`` and ``run_tags``: each plate run carries the tag ``plate`` (the sensor sets
  it, retries copy it); the run retries set ``dagster/will_retry`` and
  ``dagster/retry_number``. A plate whose latest run FAILED and will not be retried
  needs a person.

The statements take no parameters, so they run unchanged on any DB-API connection.
Dagster's table layout is its own; a change there shows as a failed doctor line
(the check names the SQL error), never as a wrong answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: The daemons the serve profile's instance requires (``DagsterInstance.get_required_daemon_types``
#: of Dagster 1.13 for crystal_pipeline.service.instance's dagster.yaml: a queued run coordinator,
#: run monitoring and run retries on, the default scheduler, asset and freshness daemons).
REQUIRED_DAEMONS = ("SENSOR", "BACKFILL", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING",
                    "EVENT_LOG_CONSUMER", "ASSET", "FRESHNESS_DAEMON")

PLATE_ASSETS = "plate_images,plate_predictions,plate_timeline,plate_report"


def rerun_command(plate_key: str) -> str:
    """The command that labels one plate again (the sensor's message and the doctor print it)."""
    return (f"dagster asset materialize -m definitions --select {PLATE_ASSETS} "
            f"--partition '{plate_key}'")


def daemon_heartbeats(con) -> dict[str, float]:
    """daemon type -> its last heartbeat, seconds since the epoch."""
    cur = con.cursor()
    try:
        cur.execute("SELECT daemon_type, body FROM daemon_heartbeats")
        return {daemon: float(json.loads(body)["timestamp"]) for daemon, body in cur.fetchall()}
    finally:
        cur.close()


@dataclass(frozen=True)
class FailedPlateRun:
    plate_key: str
    run_id: str
    attempts: int  # the first run and its retries

    def line(self) -> str:
        return f"{self.plate_key} (run {self.run_id[:8]}, {self.attempts} attempt(s)): {rerun_command(self.plate_key)}"


def failed_plate_runs(con) -> list[FailedPlateRun]:
    """Plates whose latest run FAILED and will not be retried, in plate order."""
    cur = con.cursor()
    try:
        cur.execute(
            "SELECT p.value, r.run_id, r.status, w.value, n.value FROM runs r "
            "JOIN run_tags p ON p.run_id = r.run_id AND p.key = 'plate' "
            "LEFT JOIN run_tags w ON w.run_id = r.run_id AND w.key = 'dagster/will_retry' "
            "LEFT JOIN run_tags n ON n.run_id = r.run_id AND n.key = 'dagster/retry_number' "
            "ORDER BY r.id")
        latest = {row[0]: row for row in cur.fetchall()}  # a later run of the plate replaces an earlier one
    finally:
        cur.close()
    return [FailedPlateRun(key, run_id, int(retry or 0) + 1)
            for key, (_, run_id, status, will_retry, retry) in sorted(latest.items())
            if status == "FAILURE" and will_retry != "true"]
