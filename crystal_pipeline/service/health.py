"""What the service depends on, one check each: the answers of ``crystal-pipeline doctor``.

Each check returns a :class:`Check` (name, passed, one line of detail) and never
raises: a broken dependency is a failed line, not a traceback. The checks and how
they look:

- instance storage: the Postgres of the serve profile (``CRYSTAL_POSTGRES_URL``, else
  the embedded server under ``<data_dir>/postgres``) accepts a connection and holds
  Dagster's ``runs`` table (psycopg2 only, no Dagster);
- daemon heartbeat: every daemon the serve profile requires has written a heartbeat in
  the last ``heartbeat_max_age_s`` seconds (read from the instance's tables,
  :mod:`crystal_pipeline.service.run_records`: the library never imports Dagster);
- plate runs: no plate's latest run failed past its retries; each that did is listed
  with the command that re-runs it;
- warehouse: the DuckDB file opens read-only within ``lock_wait_s`` seconds; when it
  does not, the process holding the lock is named with how long it has run;
- production model: a model is marked production, and each production model (one per
  kind: ``production visible``, ``production fused``, a line each) has a file that matches
  its registered sha256 and loads on the CPU;
- free disk: the data directory's file system has at least ``min_free_gb`` free.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.service import postgres as pg
from crystal_pipeline.service import run_records


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self, width: int = 18) -> str:
        return f"{'ok' if self.passed else 'FAIL':<5} {self.name:<{width}} {self.detail}"


@dataclass(frozen=True)
class Target:
    """Where the service keeps things: the data dir, the serve DAGSTER_HOME, the Postgres URL."""

    layout: DataLayout
    dagster_home: Path
    postgres_url: Optional[str] = None  # None: the embedded server under <data_dir>/postgres

    def resolved_postgres_url(self) -> str:
        """A libpq URL for the instance database; ``LookupError`` saying why there is none."""
        if self.postgres_url:
            return pg.libpq_url(self.postgres_url)
        return pg.running_embedded_url(self.layout.data_dir)


def _safe(name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    try:
        passed, detail = fn()
    except Exception as error:  # a check reports, it never crashes the doctor
        passed, detail = False, _reason(error)
    return Check(name, passed, detail)


def _reason(error: Exception) -> str:
    """An exception in one line: its type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def check_instance_storage(target: Target, timeout_s: int = 5) -> Check:
    def run():
        import psycopg2

        url = target.resolved_postgres_url()
        con = psycopg2.connect(url, connect_timeout=timeout_s)
        try:
            with con.cursor() as cur:
                cur.execute("SHOW server_version")
                version = cur.fetchone()[0]
                cur.execute("SELECT to_regclass('public.runs') IS NOT NULL")
                if not cur.fetchone()[0]:
                    return False, f"PostgreSQL {version} at {_redact(url)} has no Dagster tables yet"
                cur.execute("SELECT count(*) FROM runs")
                runs = cur.fetchone()[0]
        finally:
            con.close()
        return True, f"PostgreSQL {version} at {_redact(url)} reachable ({runs} runs)"

    return _safe("instance storage", run)


def _instance_db(target: Target, timeout_s: int = 5):
    import psycopg2

    return psycopg2.connect(target.resolved_postgres_url(), connect_timeout=timeout_s)


def check_daemon_heartbeat(target: Target, max_age_s: float = 120.0) -> Check:
    def run():
        con = _instance_db(target)
        try:
            beats = run_records.daemon_heartbeats(con)
        finally:
            con.close()
        now = time.time()
        stale = []
        for daemon in run_records.REQUIRED_DAEMONS:
            beat = beats.get(daemon)
            if beat is None:
                stale.append(f"{daemon}: none")
            elif now - beat > max_age_s:
                stale.append(f"{daemon}: {now - beat:.0f}s ago")
        if stale:
            return False, f"no heartbeat within {max_age_s:.0f}s: " + ", ".join(stale)
        oldest = max(now - beats[d] for d in run_records.REQUIRED_DAEMONS)
        return True, f"{len(run_records.REQUIRED_DAEMONS)} daemons, oldest heartbeat {oldest:.0f}s ago"

    return _safe("daemon heartbeat", run)


def plate_runs_check(failed: list[run_records.FailedPlateRun]) -> tuple[bool, str]:
    if not failed:
        return True, "no plate run failed past its retries"
    return False, (f"{len(failed)} plate run(s) failed past their retries; re-run each: "
                   + "; ".join(f.line() for f in failed))


def check_plate_runs(target: Target) -> Check:
    def run():
        con = _instance_db(target)
        try:
            return plate_runs_check(run_records.failed_plate_runs(con))
        finally:
            con.close()

    return _safe("plate runs", run)


def _lock_holder(message: str) -> str:
    """'PID 123 (python -m dagster ...), running 2h 5m' from DuckDB's lock error, when it names one."""
    from crystal_pipeline.service.processes import command_line, running_for_s

    found = re.search(r"PID (\d+)", message)
    if not found:
        return "another process"
    pid = int(found.group(1))
    text = f"PID {pid}"
    command = command_line(pid)
    if command:
        text += f" ({command[:80]})"
    age = running_for_s(pid)
    if age is not None:
        text += f", running {int(age // 3600)}h {int(age % 3600 // 60)}m"
    return text


def check_warehouse(target: Target, lock_wait_s: float = 10.0) -> Check:
    def run():
        from crystal_pipeline.warehouse import LakeUnavailable, WarehouseLocked, open_warehouse

        try:
            warehouse = open_warehouse(target.layout, lock_timeout_s=lock_wait_s)
        except LakeUnavailable as error:
            return False, str(error)
        where = warehouse.describe()
        if not warehouse.exists():
            return False, f"no warehouse at {where} yet (run the pipeline once)"
        started = time.monotonic()
        try:
            tables = warehouse.table_count()
        except WarehouseLocked as error:
            return False, f"{where} locked for more than {lock_wait_s:.0f}s by {_lock_holder(str(error))}"
        except LakeUnavailable as error:
            return False, str(error)
        waited = time.monotonic() - started
        return True, f"{where} opens read-only ({tables} tables; waited {waited:.1f}s)"

    return _safe("warehouse", run)


def check_production_models(target: Target) -> list[Check]:
    """One line per production model, one per kind (``production visible``, ``production
    fused``): each file matches its registered sha256 and loads on the CPU. One failed
    ``production model`` line when there is no warehouse or no production model at all."""
    try:
        from crystal_pipeline.evaluation.registry import production_models
        from crystal_pipeline.model.fusion import KIND_NAMES
        from crystal_pipeline.warehouse import open_warehouse

        warehouse = open_warehouse(target.layout, lock_timeout_s=30)
        if not warehouse.exists():
            return [Check("production model", False, f"no warehouse at {warehouse.describe()}, so no model")]
        rows = production_models(warehouse)
    except Exception as error:  # a check reports, it never crashes the doctor
        return [Check("production model", False, _reason(error))]
    if not rows:
        return [Check("production model", False, "no production model (materialize crystalnet_model)")]
    return [_safe(f"production {KIND_NAMES[kind]}", lambda row=row: _model_loads(row)) for kind, row in rows.items()]


def _model_loads(row: dict) -> tuple[bool, str]:
    from crystal_pipeline.evaluation.registry import file_sha256
    from crystal_pipeline.model import load

    artifact = Path(row["path"])
    if not artifact.is_file():
        return False, f"{row['model_version']}: file {artifact} is missing"
    if row.get("sha256") and file_sha256(artifact) != row["sha256"]:
        return False, f"{row['model_version']}: {artifact} does not match its registered sha256"
    load(artifact, device="cpu")
    return True, f"{row['model_version']} ({row['preset']}, {row['resolution']} px) loads"


def check_free_disk(target: Target, min_free_gb: float = 5.0) -> Check:
    def run():
        folder = target.layout.data_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free_gb = shutil.disk_usage(folder).free / 1e9
        verdict = free_gb >= min_free_gb
        return verdict, f"{free_gb:.1f} GB free under {target.layout.data_dir} (need {min_free_gb:g} GB)"

    return _safe("free disk", run)


def run_checks(target: Target, *, heartbeat_max_age_s: float = 120.0, lock_wait_s: float = 10.0,
               min_free_gb: float = 5.0) -> list[Check]:
    """Every check, in the order a person would fix them."""
    storage = check_instance_storage(target)
    unreachable = "not checked: the instance storage is unreachable"
    heartbeat = (check_daemon_heartbeat(target, heartbeat_max_age_s) if storage.passed
                 else Check("daemon heartbeat", False, unreachable))
    plates = check_plate_runs(target) if storage.passed else Check("plate runs", False, unreachable)
    return [storage, heartbeat, plates, check_warehouse(target, lock_wait_s), *check_production_models(target),
            check_free_disk(target, min_free_gb)]
