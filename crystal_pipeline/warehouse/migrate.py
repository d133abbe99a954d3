"""Copy a warehouse to the other backend (file <-> lake) and prove nothing was lost.

A lab starts on the embedded DuckDB file and moves to a lake when a second worker
comes; ``crystal-pipeline warehouse migrate --to ducklake`` (and ``--to file``) copies
every table of :data:`schema.TABLES` in one transaction on the target, then compares
each table's row count and content hash on both sides and fails if any differs. The
target must be empty (or hold exactly the source's rows, a copy re-run), so a
migration never merges two warehouses by accident.

The hash is over rows, not files: each row is written as text (columns by name, a
fixed-size ``FLOAT[10]`` as the list the lake stores), the texts sorted and hashed,
so the same content gives the same hash on either backend whatever the row order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows
from crystal_pipeline.warehouse.schema import TABLES


class MigrationError(RuntimeError):
    """The copy was refused (the target holds other rows) or did not compare equal."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    source_hash: str
    target_rows: int
    target_hash: str

    @property
    def equal(self) -> bool:
        return (self.rows, self.source_hash) == (self.target_rows, self.target_hash)


def _columns(con, table: str) -> list[str]:
    rows = con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                       "AND table_catalog = current_database() ORDER BY column_name", [table]).fetchall()
    return [r[0] for r in rows]


def _row_text_sql(con, table: str) -> str:
    """One VARCHAR per row, the same on both backends (``FLOAT[10]`` read as ``FLOAT[]``)."""
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                             "AND table_catalog = current_database()", [table]).fetchall())
    parts = []
    for name in _columns(con, table):
        ref = f'"{name}"'
        if types[name].endswith("]") and not types[name].endswith("[]"):  # a fixed-size ARRAY
            ref = f"CAST({ref} AS {types[name].rsplit('[', 1)[0]}[])"
        parts.append(f"coalesce(CAST({ref} AS VARCHAR), '\\N')")
    return f"SELECT concat_ws(chr(31), {', '.join(parts)}) AS r FROM {table} ORDER BY r"


def table_digest(warehouse: Warehouse, table: str) -> tuple[int, str]:
    """``(rows, sha256 of the sorted row texts)`` of one table."""
    digest = hashlib.sha256()
    rows = 0
    with warehouse.connect(read_only=True) as con:
        cursor = con.execute(_row_text_sql(con, table))
        while True:
            chunk = cursor.fetchmany(50_000)
            if not chunk:
                break
            for (text,) in chunk:
                digest.update(text.encode())
                digest.update(b"\n")
            rows += len(chunk)
    return rows, digest.hexdigest()


def migrate(source: Warehouse, target: Warehouse, *, progress=print) -> list[TableCopy]:
    """Copy every table from ``source`` to ``target`` and compare; raises :class:`MigrationError`
    when the target held other rows or a table differs after the copy."""
    source.ensure_schema()
    target.ensure_schema()
    before = {table: table_digest(source, table) for table in TABLES}
    held = {table: table_digest(target, table) for table in TABLES}
    if all(held[t] == before[t] for t in TABLES):
        progress("the target already holds exactly the source's rows; nothing to copy")
    else:
        occupied = [f"{t} ({held[t][0]} rows)" for t in TABLES if held[t][0]]
        if occupied:
            raise MigrationError(f"the target {target.describe()} is not empty: {', '.join(occupied)}; "
                                 "migrate into an empty warehouse")
        frames = {}
        for table in TABLES:
            with source.connect(read_only=True) as con:
                frames[table] = con.execute(f"SELECT * FROM {table}").fetch_arrow_table()  # NULLs stay NULL
            progress(f"read {table}: {len(frames[table]):,} rows")

        def copy(con):
            for table, frame in frames.items():
                replace_rows(con, table, frame)

        target.write(copy, scope="migrate")
        progress(f"wrote {sum(len(f) for f in frames.values()):,} rows to {target.describe()} in one transaction")
    copies = [TableCopy(t, *before[t], *table_digest(target, t)) for t in TABLES]
    unequal = [c.table for c in copies if not c.equal]
    if unequal:
        raise MigrationError(f"after the copy these tables differ from the source: {', '.join(unequal)}")
    return copies
