"""The DuckLake backend: the warehouse's tables in a lake several processes write at once.

A DuckDB file has one writer at a time, and DuckDB warns against sharing it over a
network. A DuckLake keeps the same tables as Parquet files under a data path (local,
or storage every worker mounts) and their catalog in PostgreSQL, so writers on any
machine commit concurrently with snapshot isolation: a reader sees committed
snapshots only, and a writer killed before its commit leaves nothing behind.

The DuckDB extensions (``ducklake``, ``postgres``) come from the pip packages
``duckdb-ext-ducklake`` and ``duckdb-ext-postgres``, which ship the binaries for the
pinned DuckDB; automatic install and load are switched off, so nothing is downloaded
at run time (docs/decisions.md, "The DuckDB pin").

DuckLake's tables take no PRIMARY KEY or UNIQUE constraint, no non-literal default and
no fixed-size ARRAY: :func:`lake_ddl` writes the file schema in the lake's dialect.
Uniqueness by key is kept by the writers, which all replace rows by key or scope in one
transaction (``connection.replace_rows``); ``probs`` becomes a FLOAT list of ten.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb

#: The name the lake is attached under; every statement then runs in it (``USE``).
CATALOG_ALIAS = "lake"
#: The Postgres schema holding the lake's catalog tables, so they sit apart from Dagster's own
#: tables when the catalog shares the instance database (the default).
METADATA_SCHEMA = "crystal_lake"


class LakeUnavailable(RuntimeError):
    """The lake's extensions or catalog could not be reached; the message says what to do."""


@dataclass(frozen=True)
class LakeTarget:
    """One lake: its catalog (a libpq conninfo or ``postgresql://`` URL) and its data path."""

    catalog: str
    data_path: Path

    def describe(self) -> str:
        """Where the lake is, with no password: for logs, metadata and ``doctor``."""
        return f"ducklake catalog {redact(self.catalog)}, data {self.data_path}"


def redact(conninfo: str) -> str:
    """The catalog address without its password (URL or key=value form)."""
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", conninfo)
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", text)


def extension_directory() -> Path:
    """The folder the pip packages put the extension binaries in (``duckdb_ext/extensions``)."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise LakeUnavailable("the DuckLake backend needs the packages duckdb-ext-ducklake and duckdb-ext-postgres "
                              "(pip install -e '.[dev]' or make install installs them)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "extensions"
        if folder.is_dir():
            return folder
    raise LakeUnavailable(f"duckdb_ext has no extensions folder in {list(spec.submodule_search_locations)}")


def _catalog_conninfo(catalog: str) -> str:
    """What DuckDB's postgres extension reads: libpq key=value or a URL without a driver name."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", catalog)


def attach(con: duckdb.DuckDBPyConnection, target: LakeTarget, *, read_only: bool) -> None:
    """Load the shipped extensions into ``con`` and attach the lake as its default catalog."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET extension_directory = ?", [str(extension_directory())])
    try:
        con.execute("LOAD postgres")
        con.execute("LOAD ducklake")
    except duckdb.Error as error:
        raise LakeUnavailable(f"the DuckLake extensions did not load for DuckDB {duckdb.__version__}: {error}") from error
    options = [f"DATA_PATH '{_sql_text(str(target.data_path) + '/')}'", f"METADATA_SCHEMA '{METADATA_SCHEMA}'"]
    if read_only:
        options.append("READ_ONLY")
    source = _sql_text("ducklake:postgres:" + _catalog_conninfo(target.catalog))
    try:
        con.execute(f"ATTACH '{source}' AS {CATALOG_ALIAS} ({', '.join(options)})")
    except duckdb.Error as error:
        raise LakeUnavailable(f"could not attach the lake ({target.describe()}): {redact(str(error))}") from error
    con.execute(f"USE {CATALOG_ALIAS}")


_SHARED: dict[LakeTarget, tuple[int, duckdb.DuckDBPyConnection]] = {}
_SHARED_LOCK = threading.Lock()


def open_connection(target: LakeTarget) -> duckdb.DuckDBPyConnection:
    """A connection of its own (its own transactions) to ``target``, for one unit of work.

    Loading the extensions and attaching the catalog costs most of a second, so each
    process attaches a lake once, to an in-memory DuckDB it keeps, and hands out cursors
    of it (``cursor()`` is a new connection to the same database). A forked child attaches
    anew. Every cursor reads committed snapshots only, so read-only and read-write work
    share the one attachment."""
    with _SHARED_LOCK:
        pid, root = _SHARED.get(target, (None, None))
        if pid != os.getpid():
            root = duckdb.connect()
            try:
                attach(root, target, read_only=False)
            except BaseException:
                root.close()
                raise
            _SHARED[target] = (os.getpid(), root)
        con = root.cursor()
    con.execute(f"USE {CATALOG_ALIAS}")
    return con


def forget(target: LakeTarget) -> None:
    """Close this process's attachment to ``target`` (the next connection attaches anew)."""
    with _SHARED_LOCK:
        pid, root = _SHARED.pop(target, (None, None))
    if root is not None and pid == os.getpid():
        root.close()


@contextmanager
def serialized(target: LakeTarget, key: str) -> Iterator[None]:
    """Hold the catalog server's advisory lock on ``key`` (on every machine) while the block runs.

    Snapshot isolation alone lets two writers that replace the same new plate both commit:
    each deletes nothing, so DuckLake sees no conflict, and the plate's rows land twice.
    Writers of one scope (a plate's predictions, a table) therefore take turns on a
    PostgreSQL advisory lock; writers of different plates do not wait for each other. The
    lock belongs to a session of its own, so a writer killed anywhere releases it."""
    import psycopg2  # installed with dagster-postgres

    con = psycopg2.connect(_catalog_conninfo(target.catalog), connect_timeout=10)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        try:
            yield
        finally:
            with con.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    finally:
        con.close()


def _sql_text(text: str) -> str:
    """``text`` inside a single-quoted SQL literal (ATTACH takes no parameters)."""
    return text.replace("'", "''")


def is_conflict(error: BaseException) -> bool:
    """True for a commit DuckLake refused because another writer's snapshot conflicts with it
    (both deleted from one data file, say): the unit of work can run again on the new snapshot."""
    text = str(error)
    return isinstance(error, duckdb.Error) and (
        "conflict" in text.lower() or "Failed to commit DuckLake transaction" in text)


_LAKE_REWRITES = (
    (re.compile(r"\s+PRIMARY KEY", re.IGNORECASE), ""),
    (re.compile(r"\s+DEFAULT FALSE", re.IGNORECASE), ""),
    (re.compile(r"FLOAT\[10\]"), "FLOAT[]"),
)


def lake_ddl(statement: str) -> str:
    """A statement of ``schema.SCHEMA`` as DuckLake takes it (see the module docstring)."""
    for pattern, replacement in _LAKE_REWRITES:
        statement = pattern.sub(replacement, statement)
    return statement


def target_for(layout) -> LakeTarget:
    """The lake of a :class:`~crystal_pipeline.layout.DataLayout`: its catalog setting, else the
    embedded Postgres of ``make serve`` under the data dir (which must be running)."""
    catalog = layout.warehouse_url
    if not catalog:
        from crystal_pipeline.service.postgres import running_embedded_url

        try:
            catalog = running_embedded_url(layout.data_dir)
        except LookupError as error:
            raise LakeUnavailable(f"CRYSTAL_WAREHOUSE=ducklake needs a catalog: set CRYSTAL_WAREHOUSE_URL, or "
                                  f"start `make serve` for its Postgres ({error})") from None
    return LakeTarget(catalog=catalog, data_path=Path(layout.lake_data_dir))
