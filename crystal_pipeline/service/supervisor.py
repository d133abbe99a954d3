"""``make serve``: Postgres, a code server, dagster-daemon and dagster-webserver, supervised.

Start order: Postgres (the embedded one, unless ``CRYSTAL_POSTGRES_URL`` names a
server) -> the instance's ``dagster.yaml`` and ``workspace.yaml`` written into the
profile's ``DAGSTER_HOME`` -> pool limits set -> the code server (``dagster api
grpc``, which also launches the run workers) -> ``dagster-daemon run`` and
``dagster-webserver``. Each runs in its own process group, so a Ctrl-C at the
terminal reaches only the supervisor, which then stops them in order:

1. webserver and daemon (SIGTERM): nothing new is launched;
2. runs in flight get ``drain_s`` seconds to finish, then the code server and every
   process below it are ended (SIGTERM, then SIGKILL);
3. Postgres: fast shutdown.

The supervisor is a child subreaper (Linux), so a process orphaned on the way is
still found and ended: when it exits, nothing it started is left running. If any
service process dies on its own, the supervisor stops the rest and exits 1, so a
process manager (systemd, Kubernetes) restarts the whole service.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.service import processes
from crystal_pipeline.service.instance import POOLS, InstanceSettings, dagster_yaml, workspace_yaml
from crystal_pipeline.service.postgres import EmbeddedPostgres, cluster_root, free_port, sqlalchemy_url

log = logging.getLogger("crystal_pipeline.serve")

ENV_POSTGRES_URL = "CRYSTAL_POSTGRES_URL"
ENV_SERVE_PORT = "CRYSTAL_SERVE_PORT"
ENV_SERVE_HOST = "CRYSTAL_SERVE_HOST"
ENV_SERVE_HOME = "CRYSTAL_SERVE_HOME"
LOCATION_NAME = "crystal_pipeline"


def serve_home(layout: DataLayout) -> Path:
    """The serve profile's DAGSTER_HOME: ``CRYSTAL_SERVE_HOME`` or ``<data_dir>/dagster_serve``."""
    configured = os.environ.get(ENV_SERVE_HOME)
    return Path(configured).resolve() if configured else layout.data_dir / "dagster_serve"


@dataclass
class ServeConfig:
    project_dir: Path  # where `definitions.py` lives (the code location's working directory)
    layout: DataLayout
    dagster_home: Path
    port: int = 3000
    host: str = "127.0.0.1"
    postgres_url: Optional[str] = None  # external server; None = the embedded one
    postgres_port: Optional[int] = None
    code_server_port: Optional[int] = None
    instance: InstanceSettings = field(default_factory=InstanceSettings)
    drain_s: float = 30.0
    python: str = sys.executable

    @classmethod
    def from_env(cls, project_dir: Path, **overrides) -> "ServeConfig":
        layout = DataLayout.from_env()
        values = dict(project_dir=Path(project_dir).resolve(), layout=layout, dagster_home=serve_home(layout),
                      port=int(os.environ.get(ENV_SERVE_PORT) or 3000),
                      host=os.environ.get(ENV_SERVE_HOST) or "127.0.0.1",
                      postgres_url=os.environ.get(ENV_POSTGRES_URL) or None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ServiceFailed(RuntimeError):
    pass


class Service:
    """The running service; :meth:`run` blocks until a signal or a failure."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.postgres: Optional[EmbeddedPostgres] = None
        self.children: dict[str, subprocess.Popen] = {}
        self._stop_requested: Optional[str] = None
        self._postgres_log = None

    # -- environment ---------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DAGSTER_HOME"] = str(self.config.dagster_home)
        env["CRYSTAL_DATA_DIR"] = str(self.config.layout.data_dir)
        env.setdefault("CRYSTAL_RAW_DIR", str(self.config.layout.raw_dir))
        env.setdefault("CRYSTAL_INCOMING_DIR", str(self.config.layout.incoming_dir))
        env["PYTHONUNBUFFERED"] = "1"
        if self.config.postgres_url:
            env[ENV_POSTGRES_URL] = sqlalchemy_url(self.config.postgres_url)
        return env

    def _dagster(self, *args: str) -> list[str]:
        return [self.config.python, "-m", "dagster", *args]

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=self.config.project_dir, env=self.child_env(),
                                   stdin=subprocess.DEVNULL, process_group=0,
                                   preexec_fn=processes.die_with_parent(signal.SIGTERM))
        self.children[name] = process
        log.info("started %s (pid %d): %s", name, process.pid, " ".join(command[1:]))
        return process

    # -- start -----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        processes.become_subreaper()
        cfg.dagster_home.mkdir(parents=True, exist_ok=True)
        cfg.layout.incoming_dir.mkdir(parents=True, exist_ok=True)

        url = cfg.postgres_url
        if url is None:
            self.postgres = EmbeddedPostgres(cluster_root(cfg.layout.data_dir), port=cfg.postgres_port)
            self._postgres_log = open(cfg.dagster_home / "postgres.log", "a", buffering=1)
            log.info("starting PostgreSQL in %s", self.postgres.data_dir)
            self.postgres.start(log=self._postgres_log)
            url = self.postgres.url()
            log.info("PostgreSQL ready on %s:%d (log: %s)", self.postgres.host, self.postgres.port,
                     cfg.dagster_home / "postgres.log")
        else:
            log.info("using the external PostgreSQL in %s", ENV_POSTGRES_URL)

        code_port = cfg.code_server_port or free_port()
        self._write_private(cfg.dagster_home / "dagster.yaml",
                            dagster_yaml(cfg.instance, url if self.postgres else None))
        (cfg.dagster_home / "workspace.yaml").write_text(workspace_yaml("127.0.0.1", code_port, LOCATION_NAME))
        self._set_pool_limits()
        self._spawn("code-server", self._dagster(
            "api", "grpc", "-m", "definitions", "-d", str(cfg.project_dir), "-h", "127.0.0.1", "-p", str(code_port),
            "--location-name", LOCATION_NAME))
        self._wait_for_port("code-server", code_port, timeout_s=180)
        workspace = str(cfg.dagster_home / "workspace.yaml")
        self._spawn("daemon", [cfg.python, "-m", "dagster._daemon", "run", "-w", workspace])
        self._spawn("webserver", [cfg.python, "-m", "dagster_webserver", "-w", workspace,
                                  "-h", cfg.host, "-p", str(cfg.port)])
        self._wait_for_webserver(timeout_s=180)
        self._write_state()
        print(f"crystal_pipeline service ready: http://{cfg.host}:{cfg.port} "
              f"(DAGSTER_HOME={cfg.dagster_home}, incoming: {cfg.layout.incoming_dir})", flush=True)

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        """Write a file only its owner can read (it may hold the database password)."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)

    def _set_pool_limits(self) -> None:
        limits = {"duckdb": self.config.instance.duckdb_pool_limit, "gpu": self.config.instance.gpu_pool_limit,
                  "plate_writes": self.config.instance.max_plate_runs}  # used with the lake warehouse only
        for pool in POOLS:
            result = subprocess.run(self._dagster("instance", "concurrency", "set", pool, str(limits[pool])),
                                    cwd=self.config.project_dir, env=self.child_env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0:
                raise ServiceFailed(f"setting the pool limit of {pool!r} failed:\n{result.stdout[-3000:]}")
            log.info("pool %s: limit %d", pool, limits[pool])

    def _wait_until(self, ready, failure: str, timeout_s: float, pause_s: float) -> None:
        """Poll ``ready()`` (False or OSError: not yet) until it is true; a child that died,
        a stop request or the deadline ends the wait with ServiceFailed."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_children()
            if self._stop_requested:
                raise ServiceFailed(f"stopped by {self._stop_requested} while starting")
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{failure} within {timeout_s:.0f}s")
            time.sleep(pause_s)

    def _wait_for_port(self, name: str, port: int, timeout_s: float) -> None:
        """The code server listens once the code location has loaded; the daemon and the
        webserver start after that, so neither logs a failed first load."""
        import socket

        def listening() -> bool:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True

        self._wait_until(listening, f"{name} did not listen on port {port}", timeout_s, 0.3)

    def _wait_for_webserver(self, timeout_s: float) -> None:
        url = f"http://{self.config.host}:{self.config.port}/server_info"

        def answering() -> bool:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200

        self._wait_until(answering, f"the webserver did not answer on {url}", timeout_s, 0.5)

    def _write_state(self) -> None:
        """``service.json`` in DAGSTER_HOME: who runs, for people and for `doctor` (no secrets)."""
        state = {"supervisor_pid": os.getpid(), "started_at": time.time(),
                 "url": f"http://{self.config.host}:{self.config.port}",
                 "postgres": "embedded" if self.postgres else "external",
                 "postgres_port": self.postgres.port if self.postgres else None,
                 "processes": {name: p.pid for name, p in self.children.items()}}
        (self.config.dagster_home / "service.json").write_text(json.dumps(state, indent=2) + "\n")

    # -- run and stop ------------------------------------------------------------------
    def _check_children(self) -> None:
        processes.reap_orphans({p.pid for p in self.children.values()})
        for name, process in self.children.items():
            if process.poll() is not None:
                raise ServiceFailed(f"{name} exited unexpectedly with code {process.returncode}")
        if self.postgres and self.postgres.process and self.postgres.process.poll() is not None:
            raise ServiceFailed(f"postgres exited unexpectedly with code {self.postgres.process.returncode}")

    def _on_signal(self, signum, _frame) -> None:
        self._stop_requested = signal.Signals(signum).name

    def run(self) -> int:
        """Start, serve until SIGINT/SIGTERM (exit 0) or a service process dies (exit 1), stop."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.start()
            while not self._stop_requested:
                self._check_children()
                time.sleep(0.5)
            log.info("received %s: stopping", self._stop_requested)
        except ServiceFailed as error:
            log.error("%s", error)
            code = 1
        except Exception:
            log.exception("the service failed")
            code = 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    @staticmethod
    def _run_workers(code_server_pid: int) -> list[int]:
        """The code server's run workers: its children started by multiprocessing's spawn
        (not its resource tracker, which lives as long as the server)."""
        return [pid for pid in processes.descendants(code_server_pid)
                if "spawn_main" in processes.command_line(pid)]

    def stop(self) -> None:
        """Stop in order (see the module docstring); idempotent."""
        keep = {p.pid for p in self.children.values()}
        for name in ("webserver", "daemon"):
            process = self.children.get(name)
            if process and process.poll() is None:
                tree = [process.pid, *processes.descendants(process.pid)]
                processes.end_processes(tree, grace_s=30, keep=keep)
                process.wait(5)
        code_server = self.children.get("code-server")
        if code_server and code_server.poll() is None:
            runs = self._run_workers(code_server.pid)
            if runs:
                log.info("waiting up to %.0fs for %d run process(es) to finish", self.config.drain_s, len(runs))
                processes.wait_gone(runs, self.config.drain_s, keep=keep)
            tree = [code_server.pid, *processes.descendants(code_server.pid)]
            processes.end_processes(tree, grace_s=20, keep=keep)
            code_server.wait(5)
        postgres_pid = self.postgres.process.pid if self.postgres and self.postgres.process else None
        leftovers = [p for p in processes.descendants(os.getpid())
                     if p != postgres_pid and p not in (processes.descendants(postgres_pid) if postgres_pid else [])]
        if leftovers:
            log.warning("ending %d process(es) left behind: %s", len(leftovers),
                        "; ".join(f"{p} {processes.command_line(p)[:80]}" for p in leftovers))
            processes.end_processes(leftovers, grace_s=10, keep=keep)
        if self.postgres:
            log.info("stopping PostgreSQL")
            self.postgres.stop()
        if self._postgres_log:
            self._postgres_log.close()
            self._postgres_log = None
        processes.reap_orphans(set())
        state = self.config.dagster_home / "service.json"
        state.unlink(missing_ok=True)
        log.info("stopped")
