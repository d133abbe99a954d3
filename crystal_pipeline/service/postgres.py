"""The project's own PostgreSQL server for the Dagster instance (``make serve``).

The cluster lives under ``<data_dir>/postgres`` (:func:`cluster_root`; when the service
runs as root and the ``postgres`` user cannot reach the data dir, e.g. under ``/root``,
under ``/var/lib/crystal-pipeline/postgres-<hash of the data dir>`` instead)::

    postgres/data/          the cluster (PGDATA), created by initdb on first start
    postgres/password       the generated password of the role ``crystal`` (mode 0600)

It listens on 127.0.0.1 only, with password (SCRAM) authentication and no Unix
socket, on the port given or a free one chosen at start (``postmaster.pid`` names
it while it runs). The binaries come from the distribution's package (Debian:
``/usr/lib/postgresql/<version>/bin``, installed by ``scripts/install_system_deps.sh``)
or ``CRYSTAL_POSTGRES_BIN``. Postgres refuses to run as root: when the service runs
as root, the server and initdb run as the ``postgres`` system user (the package
creates it) and the cluster folder belongs to that user.

Stopping uses Postgres' "fast" shutdown (SIGINT): open transactions are rolled back,
the data is flushed, and the server exits.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional
from urllib.parse import quote

from crystal_pipeline.service import processes

ROLE = "crystal"
DATABASE = "dagster"
SYSTEM_USER = "postgres"


class PostgresError(RuntimeError):
    """The embedded server could not be set up or started; the message says what to do."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``CRYSTAL_POSTGRES_BIN``, the newest
    Debian/Ubuntu server package, or wherever ``initdb`` is on the PATH."""
    configured = os.environ.get("CRYSTAL_POSTGRES_BIN")
    candidates = [Path(configured)] if configured else []
    candidates += sorted((Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
                         key=lambda p: _version_key(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresError("no PostgreSQL server found: run `bash scripts/install_system_deps.sh` (Debian: apt-get "
                        "install postgresql), set CRYSTAL_POSTGRES_BIN to its bin folder, or point "
                        "CRYSTAL_POSTGRES_URL at an existing server")


def _version_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in name.split("."))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: Where a cluster goes when the postgres user cannot reach the data dir (persistent, unlike /var/tmp).
FALLBACK_BASE = Path("/var/lib/crystal-pipeline")


def _searchable_by(folder: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` may pass through ``folder`` (its x bit for that user)."""
    st = folder.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def cluster_root(data_dir: Path) -> Path:
    """The embedded cluster's folder: ``<data_dir>/postgres``, unless the server must run as the
    ``postgres`` user (the service runs as root) and a folder above the data dir does not let
    that user through; then ``FALLBACK_BASE/postgres-<hash of the data dir>``, the same path
    for the same data dir on every start (the supervisor and ``doctor`` both ask here). A
    cluster already in the data dir stays there."""
    data_dir = Path(data_dir).resolve()
    preferred = data_dir / "postgres"
    account = EmbeddedPostgres._run_as()
    if account is None or (preferred / "data" / "PG_VERSION").is_file():
        return preferred
    existing = [p for p in (data_dir, *data_dir.parents) if p.exists()]
    if all(_searchable_by(p, account) for p in existing):
        return preferred
    return FALLBACK_BASE / f"postgres-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, readable by its owner only from its first byte: the
    file is created with mode 0600 (``O_EXCL``: never an existing file, nor through a link),
    not written and then chmod-ed, which leaves it world-readable for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@dataclass
class EmbeddedPostgres:
    """One cluster folder; :meth:`start` runs the server as a child process."""

    root: Path
    port: Optional[int] = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.process: Optional[subprocess.Popen] = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    # -- who runs it -------------------------------------------------------------------
    @staticmethod
    def _run_as() -> Optional[pwd.struct_passwd]:
        """The account the server runs under: the ``postgres`` user when we are root, else us."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresError("running as root, and there is no 'postgres' system user to run the server as "
                                "(the distribution's postgresql package creates it)") from None

    def _popen_kwargs(self) -> dict:
        account = self._run_as()
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
                        "LC_ALL": "C.UTF-8" if Path("/usr/lib/locale/C.utf8").exists() else "C"}}

    # -- set up ------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def ensure_cluster(self, log: IO | None = None) -> None:
        """Create the cluster on first use (initdb with the role ``crystal`` and a new password)."""
        bin_dir = find_bin_dir()
        if self.root.parent == FALLBACK_BASE:
            FALLBACK_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        account = self._run_as()
        if not self.password_file.is_file():
            write_secret(self.password_file, secrets.token_urlsafe(24) + "\n")
        if account is not None:
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.root.chmod(0o700)
            if self.data_dir.exists():
                for folder, _dirs, files in os.walk(self.data_dir):
                    os.chown(folder, account.pw_uid, account.pw_gid)
                    for name in files:
                        os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)
            probe = subprocess.run(["test", "-w", str(self.root)], **self._popen_kwargs())
            if probe.returncode != 0:
                raise PostgresError(
                    f"the '{SYSTEM_USER}' user cannot reach {self.root}: a parent folder is not searchable by "
                    f"other users (chmod o+x on it), or set CRYSTAL_DATA_DIR elsewhere, or use CRYSTAL_POSTGRES_URL")
        if self.initialized():
            return
        pwfile = self.root / ".initdb-password"
        pwfile.unlink(missing_ok=True)  # left by an initdb killed half-way
        write_secret(pwfile, self.password() + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            result = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", ROLE, "--pwfile", str(pwfile),
                 "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
                cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **self._popen_kwargs())
        finally:
            pwfile.unlink(missing_ok=True)
        if log is not None:
            log.write(result.stdout)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed in {self.data_dir}:\n{result.stdout[-2000:]}")

    # -- run ---------------------------------------------------------------------------
    def start(self, *, log: IO | None = None, timeout_s: float = 60.0) -> None:
        """Start the server (creating the cluster first if needed) and the database ``dagster``."""
        self.ensure_cluster(log)
        bin_dir = find_bin_dir()
        self.port = self.port or free_port(self.host)
        command = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                   "-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories=",
                   "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        self.process = subprocess.Popen(
            command, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT if log else None,
            process_group=0, preexec_fn=processes.die_with_parent(signal.SIGINT), **self._popen_kwargs())
        self.wait_ready(timeout_s)
        self.ensure_database()

    def connect(self, dbname: str = DATABASE, timeout_s: int = 5):
        import psycopg2  # installed with dagster-postgres

        return psycopg2.connect(host=self.host, port=self.port, user=ROLE, password=self.password(),
                                dbname=dbname, connect_timeout=timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresError(f"postgres exited with code {self.process.returncode} while starting "
                                    f"(its log says why; data in {self.data_dir})")
            try:
                self.connect("postgres", timeout_s=2).close()
                return
            except psycopg2.OperationalError as error:
                if time.monotonic() > deadline:
                    raise PostgresError(f"postgres did not accept connections within {timeout_s:.0f}s: {error}")
                time.sleep(0.2)

    def ensure_database(self) -> None:
        con = self.connect("postgres")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            con.close()

    def url(self) -> str:
        """The instance's connection URL (with the password: keep it in files only we can read)."""
        return (f"postgresql+psycopg2://{ROLE}:{quote(self.password(), safe='')}@{self.host}:{self.port}/{DATABASE}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Fast shutdown; after ``timeout_s`` an immediate one (SIGQUIT), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named: SQLAlchemy 2.1 (under dagster-postgres) reads a bare
    ``postgresql://`` as psycopg 3, which is not installed; psycopg2 comes with dagster-postgres."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg2.connect) reads it: no driver in the scheme."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def running_embedded_url(data_dir: Path) -> str:
    """A libpq URL of the embedded server of ``data_dir`` while it runs; ``LookupError`` saying
    why there is none. Used by ``doctor`` and by the lake warehouse's default catalog."""
    root = cluster_root(data_dir)
    if not (root / "data" / "PG_VERSION").is_file():
        raise LookupError(f"no CRYSTAL_POSTGRES_URL and no embedded cluster in {root} (start `make serve`)")
    port = running_port(root)
    if port is None:
        raise LookupError(f"the embedded PostgreSQL in {root} is not running (start `make serve`)")
    return libpq_url(EmbeddedPostgres(root, port=port).url())


def running_port(root: Path) -> Optional[int]:
    """The port of the cluster's server while it runs (line 4 of ``postmaster.pid``), else None."""
    try:
        lines = (Path(root) / "data" / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if processes.is_alive(pid) else None
