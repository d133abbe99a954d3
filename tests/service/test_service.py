"""`make serve` end to end: a Postgres-backed instance, the daemon doing the work, faults, the UI.

One service (``scripts/serve.py``, as ``make serve`` runs it) serves the whole module,
so the tests run in file order on one xdist worker (``--dist loadfile``). The session
fixture trains a smoke model, starts the service, and drops into the incoming folder:
six 96-well plates at once (one with two undecodable files), a 384-well plate whose
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
from crystal_pipeline.service.postgres import free_port
from crystal_pipeline.synthetic import write_plate
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources
from tests.conftest import REPO

pytestmark = [pytest.mark.slow]

MAX_RUNS, MAX_PLATE_RUNS = 3, 2
# Six plates, with KILLME and SLOW eight runs for a limit of two: the queue is full for several
# rounds. (Twelve made this the suite's longest test, about 206 s on a quiet 2-core box.)
DROPPED = [f"DROP{i:02d}" for i in range(1, 7)]
CORRUPT_PLATE, CORRUPT_WELLS = "DROP03", ("B02", "F07")
KILLED, SLOW = "KILLME", "SLOW"
SENSOR_INTERVAL_S = 5  # CRYSTAL_SENSOR_INTERVAL_S for the service under test (30 s in production)
SLOW_BATCH_PAUSE_S = 35  # several sensor ticks see the plate incomplete
WAIT_S = 420


def service_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYSTAL_", "DAGSTER_"))}
    env["CRYSTAL_DATA_DIR"] = str(data)
    env["CRYSTAL_SENSOR_INTERVAL_S"] = str(SENSOR_INTERVAL_S)
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
        self.watchers: list[threading.Thread] = []

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

    def predictions_written(self, plate: str) -> list[float]:
        """When each of the plate's prediction rows was written (UTC epoch seconds)."""
        frame = Warehouse(self.data / "warehouse.duckdb").query_df(
            "SELECT epoch(predicted_at) AS t FROM predictions WHERE plate_id = ?", [plate])
        return [float(t) for t in frame["t"]]

    def runs_summary(self) -> str:
        lines = []
        for r in self.plate_runs():
            tags = r.dagster_run.tags
            lines.append(f"{r.create_timestamp:%H:%M:%S} {r.dagster_run.run_id[:8]} {r.dagster_run.status.value} "
                         f"plate={tags.get('plate')} key={tags.get('dagster/run_key')} "
                         f"parent={str(r.dagster_run.parent_run_id)[:8]}")
        return "\n".join(lines)

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
            time.sleep(2)


def succeeded(records) -> list:
    return [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]


def step_events(instance, run_id: str, *types):
    return instance.all_logs(run_id, of_type=set(types))


def kill_while_labelling(lab: Lab) -> None:
    """Watcher thread: SIGKILL the run worker of KILLED's first run once its plate_predictions
    step has started (and not finished), then read the plate's predictions."""
    instance = dg.DagsterInstance.from_config(str(lab.home))
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            runs = instance.get_run_records(dg.RunsFilter(job_name="label_plate_job", tags={"plate": KILLED}))
            if runs:
                first = min(runs, key=lambda r: r.create_timestamp).dagster_run.run_id
                events = step_events(instance, first, dg.DagsterEventType.STEP_START,
                                     dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.ENGINE_EVENT)
                steps = [(e.dagster_event.event_type_value, e.step_key) for e in events]
                # plate_predictions is two ops: inference, then the warehouse write (assets/plates.py)
                if ("STEP_SUCCESS", "plate_predictions.write_plate_predictions") in steps:
                    lab.errors.append("the KILLME run finished plate_predictions before the watcher saw it start")
                    return
                if ("STEP_START", "plate_predictions.label_plate_wells") in steps:
                    worker = next(int(e.message.split("pid: ")[1].rstrip(").")) for e in events
                                  if (e.message or "").startswith("Started process for run (pid:"))
                    command = processes.command_line(worker)
                    victims = [worker, *processes.descendants(worker)]
                    processes.signal_all(victims, signal.SIGKILL)
                    lab.kill_record = {"run_id": first, "worker": worker, "command": command,
                                       "killed_at": time.time(), "steps_seen": steps,
                                       "alive_after": [p for p in victims if processes.is_alive(p)]}
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


# pyproject's addopts set --dist loadfile: with -n, this file's tests go to one worker, in order.
# (pytest-xdist 3.8's loadgroup did not keep an xdist_group together under pytest 9 here.)
@pytest.fixture(scope="session")
def lab(tiny_archive, tmp_path_factory):
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
        lab.watchers = [threading.Thread(target=kill_while_labelling, args=(lab,), daemon=True),
                    threading.Thread(target=write_slowly, args=(lab, staging / SLOW), daemon=True)]
        for thread in lab.watchers:
            thread.start()
        yield lab
    finally:
        if lab.process is not None and lab.process.poll() is None:
            lab.stop()
        lab.close_instance()
        if lab.log_path.exists():  # kept beside pytest's rotating temp dirs, for a post-mortem
            shutil.copy(lab.log_path, tmp_path_factory.getbasetemp().parent / "crystal-service-last.log")
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
    assert instance.event_log_storage.get_concurrency_info("plate_writes").slot_count == MAX_PLATE_RUNS
    assert instance.run_retries_max_retries == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.port}/server_info", timeout=10) as response:
        assert response.status == 200

    # The daemon writes its first heartbeats within seconds of starting.
    lab.wait_until("daemon heartbeats", lambda: doctor(lab).returncode == 0, timeout_s=90)
    result = doctor(lab)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["ok"] * 6, result.stdout
    assert "PostgreSQL" in lines[0] and "daemons" in lines[1] and lines[-1].startswith("6 ok, 0 failed")


def test_six_plates_dropped_at_once_are_each_labelled_once_within_the_limits(lab):
    def all_labelled():
        done = {r.dagster_run.tags.get("plate") for r in succeeded(lab.plate_runs())}
        return done >= {*DROPPED, KILLED, SLOW}

    lab.wait_until("every dropped plate labelled", all_labelled)
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
        for step in ("plate_images", "plate_predictions.write_plate_predictions"):
            times = sorted(e.timestamp for e in events if e.step_key == step)
            if len(times) == 2:
                windows.append((times[0], times[1], record.dagster_run.run_id))
    windows.sort()
    assert len(windows) >= 2 * len(DROPPED)
    for (_, end, run_a), (start, _, run_b) in zip(windows, windows[1:]):
        assert run_a == run_b or start >= end - 0.05, "two runs wrote the warehouse at once"


def test_a_plate_run_killed_mid_labelling_leaves_no_rows_and_completes_on_retry(lab):
    lab.watchers[0].join(timeout=WAIT_S)
    assert not lab.errors, lab.errors
    record = lab.kill_record
    assert record and "spawn_main" in record["command"], record
    killed = lab.wait_until("the killed run marked failed", lambda: (
        run if (run := lab.instance.get_run_by_id(record["run_id"])).is_finished else None), timeout_s=120)
    assert killed.status == dg.DagsterRunStatus.FAILURE, (record, lab.runs_summary())
    events = step_events(lab.instance, killed.run_id, dg.DagsterEventType.STEP_SUCCESS,
                         dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert [e for e in events if e.step_key.startswith("plate_predictions")] == [], \
        "killed before plate_predictions finished"

    runs = lab.plate_runs(KILLED)
    assert len(runs) == 2 and runs[0].dagster_run.run_id == killed.run_id, lab.runs_summary()
    retry = runs[1].dagster_run
    assert retry.parent_run_id == killed.run_id and retry.tags.get("dagster/retry_number") == "1"
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    # One complete set of rows, every one written by the retry: the killed run left none behind.
    written = lab.predictions_written(KILLED)
    assert len(written) == 384 and lab.predictions(KILLED) == (384, 384)
    assert min(written) > record["killed_at"] - 1


def test_a_plate_arriving_over_minutes_is_labelled_once_when_complete(lab):
    assert lab.slow_complete_at is not None
    runs = lab.plate_runs(SLOW)
    assert len(runs) == 1 and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert runs[0].create_timestamp.timestamp() > lab.slow_complete_at
    assert lab.predictions(SLOW) == (96, 96)


def test_the_ui_in_headless_chromium(lab, tmp_path):
    from tests.service.browser import chromium

    base = f"http://127.0.0.1:{lab.port}"
    with chromium(tmp_path) as browser:
        graph = browser.open_until(f"{base}/asset-groups", "plates")
        groups = ("ingest", "prepare", "train", "evaluate", "plates")
        xpath = "//*[local-name()='svg']//*[normalize-space(text())='{}']"
        deadline = time.monotonic() + 60
        while not all(graph.find_elements("xpath", xpath.format(g)) for g in groups):
            assert time.monotonic() < deadline, [g for g in groups if not graph.find_elements("xpath", xpath.format(g))]
            time.sleep(0.5)
        browser.screenshot("asset_graph")

        browser.open_until(f"{base}/assets/plate_report?view=partitions&partition=DROP01", "top_hits")
        browser.click_text("[Show Markdown]")
        dialog = browser.wait_for_css("[role=dialog]")
        browser.wait_for_text("Plate DROP01")
        image = dialog.find_element("css selector", "img[alt='plate map']")
        assert browser.image_size(image)[0] > 0, "the plate map image did not load"
        assert "hits" in dialog.text and len(dialog.find_elements("tag name", "table")) >= 1
        assert "labelled 96" in dialog.text
        browser.screenshot("plate_report")

        browser.open_until(f"{base}/runs", "label_plate_job")
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
    assert [r.dagster_run.tags["plate"] for r in new] == ["DROP01"], lab.runs_summary()
    assert lab.predictions("DROP01") == (96, 96)
