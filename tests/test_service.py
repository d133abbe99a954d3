"""`make serve` end to end: a Postgres-backed instance, the daemon doing the work, faults, the UI.

One service (``scripts/serve.py``, as ``make serve`` runs it) serves the whole module,
so the tests run in file order on one xdist worker (``--dist loadgroup``). The module
fixture trains a smoke model, starts the service, and drops into the incoming folder:
twelve 96-well plates at once (one with two undecodable files), a 384-well plate whose
run worker a watcher SIGKILLs while it labels, and a plate whose wells arrive in three
batches over about 70 seconds. The tests then read what happened from the instance
(Postgres) and the warehouse, drive the UI in headless Chromium, and restart the
service to check that a corrected plate runs again and nothing else does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from crystal_pipeline.service import processes
from crystal_pipeline.synthetic import write_plate
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("service")]

MAX_RUNS, MAX_PLATE_RUNS = 3, 2
DROPPED = [f"DROP{i:02d}" for i in range(1, 13)]
CORRUPT_PLATE, CORRUPT_WELLS = "DROP03", ("B02", "F07")
KILLED, SLOW = "KILLME", "SLOW"
SLOW_BATCH_PAUSE_S = 35  # longer than the sensor's 30 s interval: it sees the plate incomplete
WAIT_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYSTAL_", "DAGSTER_"))}
    env["CRYSTAL_DATA_DIR"] = str(data)
    return env


class Lab:
    """A data dir, the service running on it, and its Dagster instance."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.home = self.data / "dagster_serve"
        self.incoming = self.data / "incoming"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = root / "serve.log"
        self._instance = None
        self.kill_record: dict = {}
        self.slow_complete_at: float | None = None
        self.errors: list[str] = []

    # -- the service -------------------------------------------------------------------
    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "scripts/serve.py", "--port", str(self.port), "--max-runs", str(MAX_RUNS),
             "--max-plate-runs", str(MAX_PLATE_RUNS), "--monitoring-interval", "2", "--free-slots-after", "2",
             "--drain", "5"],
            cwd=REPO, env=service_env(self.data), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while b"crystal_pipeline service ready" not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None:
                pytest.fail(f"serve.py exited {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"service not ready within 240 s:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, n: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def service_pids(self) -> list[int]:
        """The supervisor and everything below it (Postgres and its workers, Dagster, run workers)."""
        return [self.process.pid, *processes.descendants(self.process.pid)]

    def stop(self, timeout_s: float = 120) -> int:
        self.close_instance()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    # -- what happened -----------------------------------------------------------------
    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    def close_instance(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    def plate_runs(self, plate: str | None = None) -> list:
        tags = {"plate": plate} if plate else None
        records = self.instance.get_run_records(dg.RunsFilter(job_name="label_plate_job", tags=tags))
        return sorted(records, key=lambda r: r.create_timestamp)

    def predictions(self, plate: str) -> tuple[int, int]:
        """(rows, distinct image ids) of the plate in ``predictions``."""
        frame = Warehouse(self.data / "warehouse.duckdb").query_df(
            "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM predictions WHERE plate_id = ?", [plate])
        return int(frame["n"][0]), int(frame["d"][0])

    def wait_until(self, what: str, condition, timeout_s: float = WAIT_S):
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"the service exited while waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}:\n{self.log_tail()}")
            time.sleep(1)


def succeeded(records) -> list:
    return [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]


def step_events(instance, run_id: str, *types):
    return instance.all_logs(run_id, of_type=set(types))


def kill_while_labelling(lab: Lab) -> None:
    """Watcher thread: SIGKILL the run worker of KILLED's first run once its plate_predictions
    step has started, and count the plate's predictions right after."""
    instance = dg.DagsterInstance.from_config(str(lab.home))
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            runs = instance.get_run_records(dg.RunsFilter(job_name="label_plate_job", tags={"plate": KILLED}))
            if runs:
                run_id = runs[0].dagster_run.run_id
                starts = [e for e in step_events(instance, run_id, dg.DagsterEventType.STEP_START)
                          if e.step_key == "plate_predictions"]
                if starts:
                    worker = next(int(e.message.split("pid: ")[1].rstrip(").")) for e in
                                  step_events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)
                                  if e.message.startswith("Started process for run (pid:"))
                    command = processes.command_line(worker)
                    victims = [worker, *processes.descendants(worker)]
                    processes.signal_all(victims, signal.SIGKILL)
                    killed_at = time.time()
                    processes.wait_gone(victims, 10)
                    lab.kill_record = {"run_id": run_id, "worker": worker, "command": command,
                                       "killed_at": killed_at, "after_kill": lab.predictions(KILLED)}
                    return
            time.sleep(0.1)
        lab.errors.append("the KILLME run never reached plate_predictions")
    except Exception as error:  # reported by the test that reads kill_record
        lab.errors.append(f"killer: {type(error).__name__}: {error}")
    finally:
        instance.dispose()


def write_slowly(lab: Lab, staged: Path) -> None:
    """Move SLOW's files into the incoming folder in three batches, plate.json first."""
    target = lab.incoming / SLOW
    target.mkdir()
    shutil.copy(staged / "plate.json", target / "plate.json")
    wells = sorted(staged.glob("*.png"))
    for i in range(3):
        for f in wells[i * 32:(i + 1) * 32]:
            shutil.copy(f, target / (f.name + ".tmp"))
            os.replace(target / (f.name + ".tmp"), target / f.name)
        if i < 2:
            time.sleep(SLOW_BATCH_PAUSE_S)
    lab.slow_complete_at = time.time()


@pytest.fixture(scope="module")
def lab(tiny_archive):
    # Postgres runs as the 'postgres' user when the tests run as root: its cluster folder's
    # parents must be searchable by that user, which pytest's 0700 temp root is not.
    root = Path(tempfile.mkdtemp(prefix="crystal-service-", dir="/tmp"))
    root.chmod(0o755)
    lab = Lab(root)
    try:
        shutil.copytree(tiny_archive, lab.data / "raw")
        import definitions

        trained = dg.materialize(
            [*definitions.all_assets], resources=build_resources(StorageResource(data_dir=str(lab.data))),
            instance=dg.DagsterInstance.ephemeral(), selection=dg.AssetSelection.groups("ingest", "prepare", "train"),
            run_config={"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}}}})
        assert trained.success
        staging = root / "staging"
        for i, key in enumerate(DROPPED):
            write_plate(staging / key, key, seed=20 + i, wells=96, size=64)
        for well in CORRUPT_WELLS:
            (staging / CORRUPT_PLATE / f"{well}.png").write_bytes(b"not a png")
        write_plate(staging / KILLED, KILLED, seed=40, wells=384, size=64)
        write_plate(staging / SLOW, SLOW, seed=41, wells=96, size=64)

        lab.start()
        lab.incoming.mkdir(parents=True, exist_ok=True)
        for key in (*DROPPED, KILLED):  # a whole folder appears at once
            os.rename(staging / key, lab.incoming / key)
        watchers = [threading.Thread(target=kill_while_labelling, args=(lab,), daemon=True),
                    threading.Thread(target=write_slowly, args=(lab, staging / SLOW), daemon=True)]
        for thread in watchers:
            thread.start()
        yield lab
    finally:
        if lab.process is not None and lab.process.poll() is None:
            lab.stop()
        lab.close_instance()
        shutil.rmtree(root, ignore_errors=True)


def doctor(lab: Lab, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crystal_pipeline", "doctor", "--min-free-gb", "0.1", *extra],
                          cwd=REPO, env=service_env(lab.data), capture_output=True, text=True, timeout=180)


def test_service_runs_postgres_daemon_and_webserver_as_separate_processes(lab):
    state = json.loads((lab.home / "service.json").read_text())
    commands = {name: processes.command_line(pid) for name, pid in state["processes"].items()}
    assert "dagster api grpc" in commands["code-server"]
    assert "dagster._daemon run" in commands["daemon"]
    assert "dagster_webserver" in commands["webserver"] and f"-p {lab.port}" in commands["webserver"]
    assert len(set(state["processes"].values())) == 3 and not any("dagster dev" in c for c in commands.values())
    assert state["postgres"] == "embedded" and (lab.data / "postgres" / "data" / "PG_VERSION").is_file()

    instance = lab.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == MAX_RUNS
    assert {"key": "plate", "limit": MAX_PLATE_RUNS} in queue.tag_concurrency_limits
    for pool in ("duckdb", "gpu"):
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1
    assert instance.run_retries_max_retries == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.port}/server_info", timeout=10) as response:
        assert response.status == 200

    # The daemon writes its first heartbeats within seconds of starting.
    lab.wait_until("daemon heartbeats", lambda: doctor(lab).returncode == 0, timeout_s=90)
    result = doctor(lab)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["ok"] * 5, result.stdout
    assert "PostgreSQL" in lines[0] and "daemons" in lines[1] and lines[-1].startswith("5 ok, 0 failed")


def test_twelve_plates_dropped_at_once_are_each_labelled_once_within_the_limits(lab):
    lab.wait_until("all twelve plates labelled", lambda: all(succeeded(lab.plate_runs(k)) for k in DROPPED))
    lab.wait_until("the killed plate and the slow plate labelled",
                   lambda: succeeded(lab.plate_runs(KILLED)) and succeeded(lab.plate_runs(SLOW)))
    for key in DROPPED:
        runs = lab.plate_runs(key)
        assert len(runs) == 1 and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS, key
        rows, distinct = lab.predictions(key)
        decodable = 96 - (len(CORRUPT_WELLS) if key == CORRUPT_PLATE else 0)
        assert rows == distinct == decodable, (key, rows, distinct)

    # Run concurrency, from the run records' start and end times.
    runs = [r for r in lab.plate_runs() if r.start_time and r.end_time]
    edges = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs],
                   key=lambda edge: (edge[0], edge[1]))
    running, peak = 0, 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == MAX_PLATE_RUNS, f"at most {MAX_PLATE_RUNS} plate runs at once, and the queue reached it: {peak}"

    # The duckdb pool: the warehouse-writing steps of different runs never overlap.
    windows = []
    for record in succeeded(runs):
        events = step_events(lab.instance, record.dagster_run.run_id, dg.DagsterEventType.STEP_START,
                             dg.DagsterEventType.STEP_SUCCESS)
        for step in ("plate_images", "plate_predictions"):
            times = sorted(e.timestamp for e in events if e.step_key == step)
            if len(times) == 2:
                windows.append((times[0], times[1], record.dagster_run.run_id))
    windows.sort()
    assert len(windows) >= 2 * len(DROPPED)
    for (_, end, run_a), (start, _, run_b) in zip(windows, windows[1:]):
        assert run_a == run_b or start >= end - 0.05, "two runs wrote the warehouse at once"


def test_a_plate_run_killed_mid_labelling_leaves_no_rows_and_completes_on_retry(lab):
    assert not lab.errors, lab.errors
    record = lab.kill_record
    assert record and "spawn_main" in record["command"], record
    assert record["after_kill"] == (0, 0), "no partial predictions are visible after the kill"
    killed = lab.instance.get_run_by_id(record["run_id"])
    assert killed.status == dg.DagsterRunStatus.FAILURE
    predictions_done = [e for e in step_events(lab.instance, killed.run_id, dg.DagsterEventType.STEP_SUCCESS)
                        if e.step_key == "plate_predictions"]
    assert predictions_done == [], "the worker was killed before plate_predictions finished"

    runs = lab.plate_runs(KILLED)
    assert [r.dagster_run.run_id for r in runs][0] == killed.run_id and len(runs) == 2
    retry = runs[1].dagster_run
    assert retry.parent_run_id == killed.run_id and retry.tags.get("dagster/retry_number") == "1"
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert lab.predictions(KILLED) == (384, 384)


def test_a_plate_arriving_over_minutes_is_labelled_once_when_complete(lab):
    assert lab.slow_complete_at is not None
    runs = lab.plate_runs(SLOW)
    assert len(runs) == 1 and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert runs[0].create_timestamp.timestamp() > lab.slow_complete_at
    assert lab.predictions(SLOW) == (96, 96)


def test_the_ui_in_headless_chromium(lab, tmp_path):
    from tests.browser import chromium

    base = f"http://127.0.0.1:{lab.port}"
    with chromium(tmp_path) as browser:
        graph = browser.open(f"{base}/asset-groups", "graph")
        browser.wait_for_text("plates")
        for group in ("ingest", "prepare", "train", "evaluate", "plates"):
            nodes = graph.find_elements("xpath", f"//*[local-name()='svg']//*[normalize-space(text())='{group}']")
            assert nodes, f"group {group} is not drawn in the asset graph"
        browser.screenshot("asset_graph")

        browser.open(f"{base}/assets/plate_report?view=partitions&partition=DROP01", "plate_report")
        browser.wait_for_text("top_hits")
        browser.click_text("[Show Markdown]")
        dialog = browser.wait_for_css("[role=dialog]")
        browser.wait_for_text("Plate DROP01")
        image = dialog.find_element("css selector", "img[alt='plate map']")
        assert browser.image_size(image)[0] > 0, "the plate map image did not load"
        assert "hits" in dialog.text and len(dialog.find_elements("tag name", "table")) >= 1
        assert "labelled 96" in dialog.text
        browser.screenshot("plate_report")

        browser.open(f"{base}/runs", "runs")
        browser.wait_for_text("label_plate_job")
        text = browser.text()
        assert "Success" in text and "incoming_plates_sensor" in text and "plate: DROP01" in text
        browser.screenshot("runs")
    for name in ("asset_graph", "plate_report", "runs"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_restart_runs_a_corrected_plate_again_and_never_an_unchanged_one(lab):
    before = {r.dagster_run.run_id for r in lab.plate_runs()}
    pids = lab.service_pids()
    postgres_port = json.loads((lab.home / "service.json").read_text())["postgres_port"]
    assert lab.stop() == 0, lab.log_tail()
    assert [p for p in pids if processes.is_alive(p)] == [], "every process of the service ended"
    assert not (lab.data / "postgres" / "data" / "postmaster.pid").exists(), "Postgres shut down cleanly"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", postgres_port), timeout=2).close()
    stopped = doctor(lab)
    assert stopped.returncode == 1 and stopped.stdout.startswith("FAIL  instance storage"), stopped.stdout

    # A reviewer replaces one image while the service is down.
    Image.new("L", (64, 64), 30).save(lab.incoming / "DROP01" / "A01.png")
    lab.start()
    lab.wait_until("the corrected plate labelled again", lambda: len(succeeded(lab.plate_runs("DROP01"))) == 2)
    new = [r for r in lab.plate_runs() if r.dagster_run.run_id not in before]
    assert [r.dagster_run.tags["plate"] for r in new] == ["DROP01"], "only the corrected plate ran again"
    assert lab.predictions("DROP01") == (96, 96)
