"""The ``annotations`` and ``annotation_errors`` tables: expert votes and unusable CSV rows.

Both are rebuilt from the CSVs on every run, together, in one transaction.

The CSVs are parsed row by row into a staged file (``VOTE_STAGE_SCHEMA``, one row per
data row, in read order ``seq``). The rules that need every row at once are SQL here, so
a refresh holds no vote in Python: which candidate names no stored image and which repeats
an earlier vote (:func:`judge_votes`), and how many stored votes a refresh would remove
(:func:`replace_staged_annotations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows
from crystal_pipeline.warehouse.staging import copy_to, parquet_scan, staged

_STR = pa.string()
#: One parsed CSV row as ``ingest.annotations`` stages it, in read order ``seq``. ``reason``
#: set: an error found before the image was known (field count, empty field, plate, well,
#: drop). Otherwise a candidate vote of ``image_id`` (``attribute_error``: its attributes did
#: not parse; ``is_review``: a reviewer's vote, which may repeat one of another file).
VOTE_STAGE_SCHEMA = pa.schema([
    ("seq", pa.int64()), ("image_id", _STR), ("annotator", _STR), ("attributes", pa.list_(_STR)),
    ("source_file", _STR), ("source_line", pa.int32()), ("source_mtime_ns", pa.int64()), ("raw", _STR),
    ("reason", _STR), ("attribute_error", _STR), ("is_review", pa.bool_()),
])
#: The two tables' columns, as the votes and error rows to store are staged.
ANNOTATION_SCHEMA = pa.schema([
    ("image_id", _STR), ("annotator", _STR), ("attributes", pa.list_(_STR)), ("source_file", _STR),
    ("source_line", pa.int32()), ("source_mtime_ns", pa.int64())])
ANNOTATION_ERROR_SCHEMA = pa.schema([
    ("source_file", _STR), ("source_line", pa.int32()), ("reason", _STR), ("raw", _STR)])

# The candidates (rows without an early error) that are no vote: ``unknown`` (no image has
# the id), or ``duplicate`` of the vote at ``first_file:first_line``. A valid vote (known
# image, parsed attributes) repeats the first earlier one of its image and annotator; a
# reviewer's only within one file (a later file's review of the same image is a new review,
# and consensus takes the later). Only these exceptions are written, in read order: few.
_EXCEPTIONS = """
WITH candidates AS (
    SELECT seq, image_id, annotator, source_file, source_line, is_review, attribute_error IS NULL AS parsed,
           image_id IN (SELECT image_id FROM images) AS known
    FROM {staged} WHERE reason IS NULL),
valid AS (
    SELECT seq, first_value(seq) OVER w AS first_seq, first_value(source_file) OVER w AS first_file,
           first_value(source_line) OVER w AS first_line
    FROM candidates WHERE known AND parsed
    WINDOW w AS (PARTITION BY image_id, annotator, CASE WHEN is_review THEN source_file END ORDER BY seq))
SELECT seq, 'unknown' AS problem, NULL::VARCHAR AS first_file, NULL::INTEGER AS first_line
FROM candidates WHERE NOT known
UNION ALL SELECT seq, 'duplicate', first_file, first_line FROM valid WHERE seq <> first_seq
ORDER BY seq
"""


def judge_votes(con, staged_votes: Path, exceptions: Path) -> None:
    """Write the staged candidates that are no vote (``seq, problem, first_file, first_line``,
    see ``_EXCEPTIONS``) to ``exceptions``, on a connection where ``images`` has the stored
    image ids (the warehouse's: :func:`judge_stored_votes`, or a set: :func:`judge_votes_against`)."""
    con.execute(f"COPY ({_EXCEPTIONS.format(staged=parquet_scan(staged_votes))}) {copy_to(exceptions)}")


def judge_stored_votes(warehouse: Warehouse, staged_votes: Path, exceptions: Path) -> None:
    """:func:`judge_votes` against the warehouse's ``images``."""
    with warehouse.connect(read_only=True) as con:
        judge_votes(con, staged_votes, exceptions)


def judge_votes_against(known_image_ids, staged_votes: Path, exceptions: Path) -> None:
    """:func:`judge_votes` without a warehouse: ``known_image_ids`` stand for ``images``
    (``ingest.annotations.read_annotations``, for callers that hold a small set of ids)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("images", pa.table({"image_id": pa.array(sorted(known_image_ids), type=_STR)}))
        judge_votes(con, staged_votes, exceptions)
    finally:
        con.close()


@dataclass(frozen=True)
class VoteLoss:
    """Distinct ``(image_id, annotator)`` votes stored and read again, and the stored ones
    the refresh would remove (stored, not read)."""

    stored: int
    read: int
    lost: int


@dataclass(frozen=True)
class StoredAnnotations:
    """What a refresh stored, for the asset's metadata: counts, rows per image
    (``annotators, images``), error rows per reason (``reason, rows``: the text before the
    first ``:``, most common first, ties in order of appearance), the first error rows in
    read order, and the vote loss it was allowed."""

    votes: int
    annotators: int
    images_annotated: int
    images: int
    error_rows: int
    per_image: pd.DataFrame
    reasons: pd.DataFrame
    first_errors: pd.DataFrame
    loss: VoteLoss


def replace_staged_annotations(warehouse: Warehouse, accepted: Path, errors: Path,
                               refuse: Callable[[VoteLoss], None], *, shown_errors: int = 20) -> StoredAnnotations:
    """Let ``refuse`` see the vote loss of storing the staged votes ``accepted`` (it raises to
    stop the refresh), then make the two tables hold exactly ``accepted`` and the staged error
    rows ``errors`` (``ANNOTATION_SCHEMA``, ``ANNOTATION_ERROR_SCHEMA``, in read order): all in
    one transaction, so a refused or failed refresh leaves the stored tables as they were."""
    def store(con) -> StoredAnnotations:
        loss = _vote_loss(con, accepted)
        refuse(loss)
        replace_rows(con, "annotations", staged(accepted))
        replace_rows(con, "annotation_errors", staged(errors))
        return _stored(con, accepted, errors, loss, shown_errors)

    return warehouse.write(store, scope="annotations")


def _vote_loss(con, accepted: Path) -> VoteLoss:
    stored, read, lost = con.execute(
        f"WITH s AS (SELECT DISTINCT image_id, annotator FROM annotations), "
        f"r AS (SELECT DISTINCT image_id, annotator FROM {parquet_scan(accepted)}) "
        "SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM r), (SELECT count(*) FROM s WHERE NOT EXISTS "
        "(SELECT 1 FROM r WHERE r.image_id = s.image_id AND r.annotator = s.annotator))").fetchone()
    return VoteLoss(int(stored), int(read), int(lost))


def _stored(con, accepted: Path, errors: Path, loss: VoteLoss, shown_errors: int) -> StoredAnnotations:
    votes = parquet_scan(accepted)
    ordered_errors = "read_parquet('{}', file_row_number = true)".format(str(errors).replace("'", "''"))
    n, annotators, images_annotated = con.execute(
        f"SELECT count(*), count(DISTINCT annotator), count(DISTINCT image_id) FROM {votes}").fetchone()
    per_image = con.execute(
        f"SELECT n AS annotators, count(*) AS images FROM (SELECT count(*) AS n FROM {votes} GROUP BY image_id) "
        "GROUP BY n ORDER BY n").df()
    reasons = con.execute(
        f"SELECT split_part(reason, ':', 1) AS reason, count(*) AS rows FROM {ordered_errors} "
        "GROUP BY 1 ORDER BY rows DESC, min(file_row_number)").df()
    first_errors = con.execute(
        f"SELECT source_file, source_line, reason, raw FROM {ordered_errors} ORDER BY file_row_number LIMIT ?",
        [shown_errors]).df()
    return StoredAnnotations(
        votes=int(n), annotators=int(annotators), images_annotated=int(images_annotated),
        images=int(con.execute("SELECT count(*) FROM images").fetchone()[0]),
        error_rows=int(reasons["rows"].sum()) if len(reasons) else 0, per_image=per_image, reasons=reasons,
        first_errors=first_errors, loss=loss)


def replace_annotations(warehouse: Warehouse, rows: pd.DataFrame, errors: pd.DataFrame) -> None:
    """Make the two tables hold exactly ``rows`` and ``errors`` (one transaction)."""
    def store(con):
        replace_rows(con, "annotations", rows)
        replace_rows(con, "annotation_errors", errors)

    warehouse.write(store, scope="annotations")


def annotation_errors(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.query_df("SELECT * FROM annotation_errors ORDER BY source_file, source_line")


def votes_with_sources(warehouse: Warehouse) -> pd.DataFrame:
    """Every annotation row with its annotator and where it came from (file, line, file mtime):
    what consensus needs to let the later of two reviews win."""
    return warehouse.query_df(
        "SELECT image_id, annotator, attributes, source_file, source_line, source_mtime_ns FROM annotations "
        "ORDER BY image_id, annotator, source_file, source_line")


def stage_votes_in_image_order(warehouse: Warehouse, out: Path) -> None:
    """Write every vote to the staged file ``out``, in :func:`votes_with_sources`' order (image,
    annotator, file, line), with its image's ``status`` and ``source`` (None without an
    ``images`` row): what consensus reads back batch by batch, one image after another."""
    with warehouse.connect(read_only=True) as con:
        con.execute(
            "COPY (SELECT a.image_id, a.annotator, a.attributes, a.source_file, a.source_line, a.source_mtime_ns, "
            "i.status, i.source FROM annotations a LEFT JOIN images i USING (image_id) "
            f"ORDER BY a.image_id, a.annotator, a.source_file, a.source_line) {copy_to(out)}")
