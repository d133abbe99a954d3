"""Rows staged on disk, so that ingest's memory stays flat however large the archive is.

Ingest reads tens of thousands of files and votes per run. Holding them as Python
objects or pandas frames until the one write made its peak memory grow with the
archive (about 3 KB per image, docs/benchmarks.md). Instead each step appends its rows
in Arrow batches of bounded size to a Parquet file in a private folder
(:meth:`Warehouse.staging`), lets DuckDB join and check the staged rows against the
warehouse, and stores them in one short transaction (``replace_rows`` takes a staged
file as it takes a frame). The staged files never outlive the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

#: Rows per Arrow batch held in memory before it is written (and per Parquet row group), and
#: read back at a time. Read at each call, so a test can make it small.
BATCH_ROWS = 4096


class StagedRows:
    """Rows appended one at a time to a Parquet file, ``BATCH_ROWS`` held in memory at most.

    Use as a context manager (the file is complete once it exits), then read it with
    :func:`staged` or SQL over :func:`parquet_scan`. Rows are tuples in ``schema``'s order.
    """

    def __init__(self, path: Path, schema: pa.Schema, *, batch_rows: int | None = None):
        self.path = Path(path)
        self.schema = schema
        self.batch_rows = batch_rows or BATCH_ROWS
        self.rows = 0
        self._pending: list[tuple] = []
        self._writer = pq.ParquetWriter(self.path, schema)

    def add(self, row: Sequence) -> None:
        self._pending.append(tuple(row))
        if len(self._pending) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        columns = list(zip(*self._pending))
        self._writer.write_batch(pa.record_batch(
            [pa.array(values, type=field.type) for values, field in zip(columns, self.schema)], schema=self.schema))
        self.rows += len(self._pending)
        self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __enter__(self) -> "StagedRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def staged(path: Path) -> pads.Dataset:
    """A staged Parquet file as an Arrow dataset: read lazily, batch by batch, by
    ``replace_rows`` or by :func:`batches`; its ``count_rows()`` reads only the footer."""
    return pads.dataset(str(path), format="parquet")


def batches(path: Path, *, batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of a staged Parquet file in file order, ``batch_rows`` (``BATCH_ROWS``) at a time."""
    handle = pq.ParquetFile(str(path))
    try:
        yield from handle.iter_batches(batch_size=batch_rows or BATCH_ROWS)
    finally:
        handle.close()


def parquet_scan(path: Path) -> str:
    """``read_parquet('<path>')`` for a staged file in SQL written in this package (the
    path is ours, under :meth:`Warehouse.staging`; quotes are still escaped)."""
    return "read_parquet('{}')".format(str(path).replace("'", "''"))


def copy_to(path: Path) -> str:
    """``TO '<path>' (FORMAT parquet, ...)`` for a ``COPY (query)`` that writes a staged file
    in row groups of ``BATCH_ROWS`` (so reading it back batch by batch stays small)."""
    return "TO '{}' (FORMAT parquet, ROW_GROUP_SIZE {})".format(str(path).replace("'", "''"), BATCH_ROWS)
