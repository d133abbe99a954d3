"""`crystal-pipeline doctor`: one line per dependency, exit 1 when one fails.

These run without a service: every failure is produced on purpose (no database, a
locked warehouse, a missing or tampered model, too little disk). The passing case
against a running service (Postgres, fresh daemon heartbeats) is in test_service.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from crystal_pipeline.cli import main
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.service.health import (
    Target,
    check_daemon_heartbeat,
    check_free_disk,
    check_instance_storage,
    check_production_models,
    check_warehouse,
)
from crystal_pipeline.warehouse import Warehouse
from tests.conftest import REPO


@pytest.fixture(scope="module")
def with_model(tmp_path_factory):
    """A data dir whose warehouse registers one smoke-trained production model."""
    from datetime import datetime, timezone

    from crystal_pipeline.files import file_sha256
    from crystal_pipeline.warehouse.models import insert_model
    from crystal_pipeline.training import TrainConfig, train
    from tests.training.test_training import write_toy_tensors

    data = tmp_path_factory.mktemp("doctor") / "data"
    write_toy_tensors(data)
    artifact = data / "models" / "v1" / "model.pt"
    train(TrainConfig.from_preset("smoke", {"updates": 2, "num_threads": 1}), data, artifact, trained_on="synthetic")
    wh = Warehouse(data / "warehouse.duckdb")
    wh.ensure_schema()
    insert_model(wh, model_version="v1", created_at=datetime.now(timezone.utc).replace(tzinfo=None), preset="smoke",
                 resolution=32, path=str(artifact), sha256=file_sha256(artifact), trained_on="synthetic",
                 val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.6, crystal_threshold=0.2, make_production=True)
    return data


def target(data, **kw) -> Target:
    return Target(DataLayout.under(data), data / "dagster_serve", **kw)


def test_model_warehouse_and_disk_checks_pass_on_a_healthy_data_dir(with_model):
    [model] = check_production_models(target(with_model))
    assert model.name == "production visible"
    assert model.passed and model.detail.startswith("v1 (smoke, 32 px) loads"), model
    warehouse = check_warehouse(target(with_model), lock_wait_s=2)
    assert warehouse.passed, warehouse
    assert check_free_disk(target(with_model), min_free_gb=0.001).passed


def test_each_check_fails_with_a_reason(with_model, tmp_path):
    empty = tmp_path / "empty"
    assert "no embedded cluster" in check_instance_storage(target(empty)).detail
    refused = check_instance_storage(target(empty, postgres_url="postgresql://u:secret@127.0.0.1:1/dagster"))
    assert not refused.passed and "secret" not in refused.detail
    assert not check_daemon_heartbeat(target(empty)).passed
    assert "no warehouse" in check_warehouse(target(empty)).detail
    [no_model] = check_production_models(target(empty))
    assert not no_model.passed and "no warehouse" in no_model.detail
    disk = check_free_disk(target(with_model), min_free_gb=1e9)
    assert not disk.passed and "need 1e+09 GB" in disk.detail

    # A model file that no longer matches its registered sha256.
    copy = tmp_path / "tampered"
    import shutil

    shutil.copytree(with_model, copy)
    wh = Warehouse(copy / "warehouse.duckdb")
    with wh.transaction() as con:
        con.execute("UPDATE models SET path = ?", [str(copy / "models" / "v1" / "model.pt")])
    (copy / "models" / "v1" / "model.pt").write_bytes(b"garbage")
    [tampered] = check_production_models(target(copy))
    assert not tampered.passed and "sha256" in tampered.detail


def test_each_kind_of_production_model_is_checked_and_named(with_model, tmp_path, capsys):
    """With a production model per kind, the fused model's file is checked too, not only the newest's:
    a visible model promoted after the fused one used to hide a fused file that had gone."""
    import shutil
    from datetime import datetime, timedelta, timezone

    from crystal_pipeline.warehouse.models import insert_model

    copy = tmp_path / "two_kinds"
    shutil.copytree(with_model, copy)
    visible = copy / "models" / "v1" / "model.pt"
    fused = copy / "models" / "f1" / "model.pt"
    fused.parent.mkdir(parents=True)
    fused.write_bytes(b"fused weights as registered")
    wh = Warehouse(copy / "warehouse.duckdb")
    wh.ensure_schema()
    with wh.transaction() as con:
        con.execute("UPDATE models SET path = ?, created_at = ?",
                    [str(visible), datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)])
    from crystal_pipeline.files import file_sha256

    insert_model(wh, model_version="f1", created_at=datetime.now(timezone.utc).replace(tzinfo=None), preset="smoke",
                 resolution=32, path=str(fused), sha256=file_sha256(fused), trained_on="synthetic",
                 val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.6, crystal_threshold=0.2, make_production=True,
                 in_channels=2)
    fused.write_bytes(b"damaged")  # after registration: no longer the file the registry hashed
    checks = {c.name: c for c in check_production_models(target(copy))}
    assert list(checks) == ["production visible", "production fused"]
    assert checks["production visible"].passed, checks
    assert not checks["production fused"].passed
    assert checks["production fused"].detail.startswith("f1: ") and "sha256" in checks["production fused"].detail
    fused.unlink()
    [_, gone] = check_production_models(target(copy))
    assert not gone.passed and gone.detail == f"f1: file {fused} is missing"
    assert main(["doctor", "--data-dir", str(copy), "--min-free-gb", "0.001", "--lock-wait", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "ok    production visible v1 (smoke, 32 px) loads" in lines
    assert f"FAIL  production fused   f1: file {fused} is missing" in lines
    assert lines[-1].endswith("failed: instance storage, daemon heartbeat, plate runs, production fused")


def test_a_warehouse_locked_for_too_long_names_the_process(with_model):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(with_model / 'warehouse.duckdb')!r})
        print('locked', flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        check = check_warehouse(target(with_model), lock_wait_s=1)
        assert not check.passed
        assert "locked for more than 1s" in check.detail and f"PID {holder.pid}" in check.detail, check.detail
    finally:
        holder.kill()
        holder.wait()


def test_the_command_prints_one_line_per_check_and_exits_1(with_model, capsys):
    code = main(["doctor", "--data-dir", str(with_model), "--min-free-gb", "0.001", "--lock-wait", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line.split()[0] for line in lines[:6]] == ["FAIL", "FAIL", "FAIL", "ok", "ok", "ok"]
    assert lines[1].split(None, 1)[1].startswith("daemon heartbeat   not checked")
    assert lines[2].split(None, 1)[1].startswith("plate runs         not checked")
    assert lines[-1] == "3 ok, 3 failed: instance storage, daemon heartbeat, plate runs"


def test_the_console_script_runs_doctor(tmp_path):
    result = subprocess.run([sys.executable, "-m", "crystal_pipeline", "doctor", "--data-dir", str(tmp_path),
                             "--min-free-gb", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("1 ok, 5 failed")


def test_the_instance_tables_say_which_plate_runs_failed_past_their_retries_without_dagster(tmp_path):
    """The doctor's SQL (crystal_pipeline.service.run_records) on a real instance's run storage:
    SQLite here, the same tables as the serve profile's PostgreSQL."""
    import sqlite3
    import time

    import dagster as dg
    from dagster._daemon.types import DaemonHeartbeat

    from crystal_pipeline.service import run_records
    from crystal_pipeline.service.health import plate_runs_check

    @dg.op
    def step():
        pass

    @dg.job
    def job():
        step()

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        def run(plate, status, **tags):
            made = instance.create_run_for_job(job, tags={"plate": plate, **tags})
            if status == "FAILURE":
                instance.report_run_failed(made)
            else:
                instance.handle_run_event(made.run_id, dg.DagsterEvent(
                    event_type_value="PIPELINE_SUCCESS", job_name=made.job_name))
            return made

        failed_once = run("P1", "FAILURE", **{"dagster/will_retry": "false"})
        retried = run("P2", "FAILURE", **{"dagster/will_retry": "true"})  # its retry is on its way
        last_try = run("P3@day3", "FAILURE", **{"dagster/retry_number": "2", "dagster/will_retry": "false"})
        run("P4", "FAILURE")
        run("P4", "SUCCESS")  # re-run by hand after the failure: fine now
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - 5, "SENSOR", "d1", errors=[]))
        con = sqlite3.connect(tmp_path / "history" / "runs.db")
        try:
            failed = run_records.failed_plate_runs(con)
            beats = run_records.daemon_heartbeats(con)
        finally:
            con.close()
    assert [(f.plate_key, f.run_id, f.attempts) for f in failed] == [
        ("P1", failed_once.run_id, 1), ("P3@day3", last_try.run_id, 3)]
    assert retried.run_id not in {f.run_id for f in failed}
    assert set(beats) == {"SENSOR"} and 0 < time.time() - beats["SENSOR"] < 60
    passed, detail = plate_runs_check(failed)
    assert not passed and detail.startswith("2 plate run(s) failed past their retries")
    assert "dagster asset materialize -m definitions --select plate_images," in detail
    assert "--partition 'P3@day3'" in detail
