"""The DuckDB warehouse connection: one file, short-lived connections, patience with locks.

DuckDB lets one process hold a file for writing, and a reader is refused while a
writer holds it. Pipeline steps therefore open a connection for one unit of work,
close it in ``finally`` (even when an exception escapes, so a traceback never keeps
the lock alive), and retry a refused lock with backoff instead of failing the run.
Dagster's ``duckdb`` pool serializes the writers; the retry covers everything else
(the UI, a notebook, a second run of another job).
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import pandas as pd

from crystal_pipeline.faults import crash_point
from crystal_pipeline.warehouse.schema import SCHEMA

log = logging.getLogger(__name__)


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
    """Access to one DuckDB file. Create it cheaply; it holds no connection."""

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 300.0, initial_backoff_s: float = 0.05):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.initial_backoff_s = initial_backoff_s

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
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

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work, closed whatever happens.

        Read-only connections on a file that does not exist yet would fail, so the
        schema is created first in that case.
        """
        if read_only and not self.path.exists():
            self.ensure_schema()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: all of it lands or none."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def ensure_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            for ddl in SCHEMA:
                con.execute(ddl)

    def query_df(self, sql: str, params: list | tuple | None = None):
        """Run a read-only query and return a pandas DataFrame."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: list | tuple | None = None):
        with self.connect(read_only=True) as con:
            row = con.execute(sql, params or []).fetchone()
        return None if row is None else row[0]


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, *,
                 where: str | None = None, params: Sequence = (), key: str | None = None) -> None:
    """Replace ``table``'s rows in scope by ``frame``'s, on a connection inside a transaction.

    The one "delete, register a frame, insert" of the package. The rows deleted are those
    matching ``where`` (with ``params``; None: every row), or, with ``key``, those whose
    ``key`` column value appears in ``frame`` (an upsert by key). ``frame``'s columns are
    inserted by name, so its column order does not matter; an empty frame only deletes.
    ``where`` is SQL written inside this package, never a caller's text.
    """
    if key is not None and len(frame) == 0:
        return
    name = f"_replace_{table}"
    if len(frame):  # an empty frame (perhaps without columns) is only a delete
        con.register(name, frame)
    try:
        if key is not None:
            con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {name})")
        else:
            con.execute(f"DELETE FROM {table}" + (f" WHERE {where}" if where else ""), list(params))
        crash_point("warehouse.replace_rows.after_delete")
        if len(frame):
            _insert(con, table, name, frame.columns)
    finally:
        if len(frame):
            con.unregister(name)
    # The caller's transaction commits next: a kill here must leave the old rows (tests/warehouse).
    crash_point("warehouse.replace_rows.before_commit")


def _insert(con: duckdb.DuckDBPyConnection, table: str, view: str, columns: Sequence[str]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view}")
