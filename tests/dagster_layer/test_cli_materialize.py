"""The mission's CI command: `dagster asset materialize -m definitions` over a tiny archive."""

import json
import shutil
import subprocess
import sys

import pytest

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse
from tests.conftest import REPO, cli_env


@pytest.mark.slow
def test_dagster_asset_materialize_cli_runs_ingest_prepare_and_train(tmp_path, tiny_archive):
    """The three groups through the real CLI, steps in one process: the multiprocess executor (a
    spawned interpreter and a torch import per step, 2 min of the suite's 10 on 2 cores) is
    covered by the blocking-check run below, which uses the CLI's default executor."""
    data = tmp_path / "data"
    shutil.copytree(tiny_archive, data / "raw")
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "definitions",
         "--select", "group:ingest or group:prepare or group:train",
         "--config-json", json.dumps({"execution": {"config": {"in_process": {}}},
                                     "ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0}}}})],
        cwd=REPO, env=cli_env(data), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layout = DataLayout.under(data)
    wh = Warehouse(layout.warehouse)
    labelled = wh.scalar("SELECT count(*) FROM consensus_labels")
    assert labelled > 0
    assert sorted(p.name for p in layout.tensors_dir(128).iterdir()) == ["stats.npz", "test", "train", "val"]
    assert wh.scalar("SELECT count(*) FROM models WHERE is_production") == 1
    assert layout.model_path(wh.scalar("SELECT model_version FROM models")).is_file()
    # The run is recorded in the instance the UI opens.
    assert any((data / "dagster_home").rglob("*.db"))


@pytest.mark.slow
def test_a_failing_blocking_check_stops_the_cli_run_before_the_tensors(tmp_path, tiny_archive):
    """The real CLI: split_shares judged strictly (run config) fails, so image_tensors never runs."""
    data = tmp_path / "data"
    shutil.copytree(tiny_archive, data / "raw")
    strict = {"share_min_groups": 1, "share_tolerance": 0.0}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "definitions",
         "--select", "group:ingest or group:prepare",
         # In process, as the CLI test above: the check's verdict does not depend on the executor,
         # and a process per step cost this test most of its two minutes.
         "--config-json", json.dumps({"execution": {"config": {"in_process": {}}},
                                      "ops": {"consensus_labels": {"config": strict}}})],
        cwd=REPO, env=cli_env(data), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "blocking asset check failed" in output and "split_shares" in output, output[-3000:]
    layout = DataLayout.under(data)
    assert Warehouse(layout.warehouse).scalar("SELECT count(*) FROM consensus_labels") > 0  # labels stored
    assert not layout.tensors_dir(128).exists()  # ... but nothing was prepared from them
