"""The warehouse connection: short-lived connections to a DuckDB file or a DuckLake.

Two backends behind one interface (``Warehouse``); nothing outside this package knows
which one is in use:

- **file** (the default): one DuckDB file. DuckDB lets one process hold it for
  writing, and a reader is refused while a writer holds it. Pipeline steps therefore
  open a connection for one unit of work, close it in ``finally`` (even when an
  exception escapes, so a traceback never keeps the lock alive), and retry a refused
  lock with backoff instead of failing the run. Dagster's ``duckdb`` pool serializes
  the writers; the retry covers everything else (the UI, a notebook, another job).
- **ducklake** (``CRYSTAL_WAREHOUSE=ducklake``; ``lake``): the same tables in a DuckLake
  whose catalog is in PostgreSQL. Writers commit concurrently; a commit that conflicts
  with another writer's is run again on the new snapshot (:meth:`Warehouse.write`).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from crystal_pipeline.faults import crash_point
from crystal_pipeline.warehouse import lake as lake_backend
from crystal_pipeline.warehouse.lake import LakeTarget
from crystal_pipeline.warehouse.schema import SCHEMA

log = logging.getLogger(__name__)
T = TypeVar("T")

def _is_lock_conflict(error: Exception) -> bool:
    """True for the refusals that go away once another connection closes."""
    text = str(error)
    return (
        "Could not set lock" in text
        or "Conflicting lock" in text
        # Same process, other connection still open with the other read/write mode.
        or "different configuration than existing connections" in text
    )


class WarehouseLocked(RuntimeError):
    """The file stayed locked by another process for longer than we are willing to wait."""


class Warehouse:
    """Access to the warehouse: a DuckDB file (``Warehouse(path)``) or a lake
    (``Warehouse.in_lake(target)``). Create it cheaply; it holds no connection."""

    def __init__(self, path: str | Path | None = None, *, lake: Optional[LakeTarget] = None,
                 lock_timeout_s: float = 300.0, initial_backoff_s: float = 0.05):
        if (path is None) == (lake is None):
            raise ValueError("a warehouse is either a DuckDB file (path) or a lake (lake), not both or neither")
        self.path = None if path is None else Path(path)
        self.lake = lake
        self.lock_timeout_s = lock_timeout_s
        self.initial_backoff_s = initial_backoff_s
        self._schema_ready = False

    @classmethod
    def in_lake(cls, target: LakeTarget, **kwargs) -> "Warehouse":
        return cls(lake=target, **kwargs)

    @property
    def backend(self) -> str:
        """``file`` or ``ducklake``: for metadata, ``doctor`` and the pool choice."""
        return "file" if self.lake is None else "ducklake"

    def describe(self) -> str:
        """Where the warehouse is, with no password."""
        return str(self.path) if self.lake is None else self.lake.describe()

    def exists(self) -> bool:
        """Whether there is a warehouse yet (a lake, once attached, always is)."""
        return self.lake is not None or self.path.is_file()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.lake is not None:
            return self._open_lake(read_only)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = self.initial_backoff_s
        attempts = 0
        while True:
            attempts += 1
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                if not _is_lock_conflict(error):
                    raise
                if time.monotonic() + delay > deadline:
                    raise WarehouseLocked(
                        f"{self.path} stayed locked for {self.lock_timeout_s:.0f}s ({attempts} attempts): {error}"
                    ) from error
                if attempts == 1 or attempts % 10 == 0:
                    log.info("warehouse %s is locked; retrying in %.2fs", self.path, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    def _open_lake(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A cursor of this process's attachment (``lake.open_connection``): a reader sees
        committed snapshots only, so ``read_only`` needs no separate attachment."""
        self.lake.data_path.mkdir(parents=True, exist_ok=True)
        return lake_backend.open_connection(self.lake)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work, closed whatever happens.

        Read-only connections on a warehouse without its tables yet would fail, so the
        schema is created first in that case (a missing file; a lake on first use).
        """
        if read_only and (not self.exists() or (self.lake is not None and not self._schema_ready)):
            self.ensure_schema()
        if not read_only and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: all of it lands or none.

        Runs once: on a lake, prefer :meth:`write`, which runs the work again when its
        commit conflicts with another writer's."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def write(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, scope: str, attempts: int = 8) -> T:
        """``work(con)`` in one transaction, committed; all of it lands or none.

        ``scope`` names what the work replaces (``predictions/<plate>/...``, a table): on a
        lake, writers of one scope take turns (``lake.serialized``), so two replacing the
        same rows never both land. A commit refused because a concurrent writer's snapshot
        conflicts with it (another scope's writer deleted rows from the same data file) is
        rolled back and ``work`` runs again on the new snapshot, with backoff, up to
        ``attempts`` times; ``work`` must therefore only touch the connection. A file has
        one writer at a time, so there the work runs once."""
        delay = self.initial_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                if self.lake is None:
                    with self.transaction() as con:
                        return work(con)
                with lake_backend.serialized(self.lake, scope), self.transaction() as con:
                    return work(con)
            except duckdb.Error as error:
                if self.lake is None or not lake_backend.is_conflict(error) or attempt == attempts:
                    raise
                log.info("lake commit conflicted with another writer (attempt %d); retrying: %s", attempt, error)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder for rows staged on disk before one write (``warehouse.staging``),
        removed afterwards whatever happens. It sits beside the warehouse file (or the lake's
        data), not in ``/tmp``, which may be memory."""
        base = self.path.parent if self.lake is None else Path(self.lake.data_path).parent
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=base) as folder:
            yield Path(folder)

    def ensure_schema(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        statements = SCHEMA if self.lake is None else tuple(lake_backend.lake_ddl(s) for s in SCHEMA)

        def create(con):
            for ddl in statements:
                con.execute(ddl)

        if self.lake is None:
            with self.connect() as con:
                create(con)
        else:
            self.write(create, scope="schema")  # workers starting at once take turns
        self._schema_ready = True

    def table_count(self) -> int:
        """How many of the warehouse's tables exist (``doctor`` opens the warehouse with it)."""
        with self.connect(read_only=True) as con:
            return int(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = "
                                   "current_database()").fetchone()[0])

    def query_df(self, sql: str, params: list | tuple | None = None):
        """Run a read-only query and return a pandas DataFrame."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: list | tuple | None = None):
        with self.connect(read_only=True) as con:
            row = con.execute(sql, params or []).fetchone()
        return None if row is None else row[0]


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, frame: "pd.DataFrame | pa.Table | pads.Dataset", *,
                 where: str | None = None, params: Sequence = (), key: str | None = None) -> None:
    """Replace ``table``'s rows in scope by ``frame``'s, on a connection inside a transaction.

    The one "delete, register a frame, insert" of the package. The rows deleted are those
    matching ``where`` (with ``params``; None: every row), or, with ``key``, those whose
    ``key`` column value appears in ``frame`` (an upsert by key). ``frame`` is a pandas or
    Arrow table (Arrow keeps a NULL integer NULL, where pandas would make it NaN), or a staged
    Parquet file (``staging.staged``: read from disk as it is inserted, in file order); its columns
    are inserted by name, so its column order does not matter; an empty frame only deletes.
    ``where`` is SQL written inside this package, never a caller's text.
    """
    rows = frame.count_rows() if isinstance(frame, pads.Dataset) else len(frame)
    if key is not None and rows == 0:
        return
    name = f"_replace_{table}"
    if rows:  # an empty frame (perhaps without columns) is only a delete
        con.register(name, frame)
    try:
        if key is not None:
            con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {name})")
        else:
            con.execute(f"DELETE FROM {table}" + (f" WHERE {where}" if where else ""), list(params))
        crash_point("warehouse.replace_rows.after_delete")
        if rows:
            _insert(con, table, name, _column_names(frame))
    finally:
        if rows:
            con.unregister(name)
    # The caller's transaction commits next: a kill here must leave the old rows (tests/warehouse).
    crash_point("warehouse.replace_rows.before_commit")


def _column_names(frame) -> Sequence[str]:
    if isinstance(frame, pads.Dataset):
        return frame.schema.names
    return getattr(frame, "column_names", None) or frame.columns


def _insert(con: duckdb.DuckDBPyConnection, table: str, view: str, columns: Sequence[str]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view}")
