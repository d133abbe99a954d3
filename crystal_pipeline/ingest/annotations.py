"""Reading the experts' annotation CSVs without losing a row or crashing on one.

Each CSV has a header and the columns ``plate_id``, ``well``, ``annotator``,
``attributes`` and optionally ``inspection`` and ``drop`` (1 when absent), in any order. A row that cannot be
used (a missing field, an unknown attribute, a well or image that does not exist,
the same annotator twice for one image) becomes an error row with its file, line
and reason; all other rows go on. A reviewer (annotator ``review:<name>``) may review
one image again in a later file: both rows are kept, with their file's mtime, and
consensus takes the later one (:mod:`crystal_pipeline.ingest.reviews`).

The files are read one row at a time into a staged file on disk
(``warehouse.annotations.VOTE_STAGE_SCHEMA``); whether a row names a stored image and
whether it repeats an earlier vote are decided over all staged rows at once in DuckDB
(``warehouse.annotations.resolve_votes``), so a refresh's memory does not grow with the
number of votes. :func:`refresh_annotations` is the asset's path; :func:`read_annotations`
the same rules for a caller holding a small set of image ids.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from crystal_pipeline import wells
from crystal_pipeline.ingest.archive import plate_key
from crystal_pipeline.classes import UnknownAttribute, parse_attributes
from crystal_pipeline.ingest.reviews import is_review
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import annotations as annotation_table
from crystal_pipeline.warehouse.staging import StagedRows, batches

REQUIRED_COLUMNS = ("plate_id", "well", "annotator", "attributes")


@dataclass(frozen=True)
class Annotation:
    image_id: str
    annotator: str
    attributes: tuple[str, ...]  # sorted, normalized
    source_file: str
    source_line: int
    source_mtime_ns: int | None = None  # orders two reviews of one image (the later file wins)


@dataclass(frozen=True)
class AnnotationError:
    source_file: str
    source_line: int | None
    reason: str
    raw: str


@dataclass
class AnnotationTable:
    annotations: list[Annotation] = field(default_factory=list)
    errors: list[AnnotationError] = field(default_factory=list)


class AnnotationRefreshRefused(RuntimeError):
    """A refresh would destroy stored votes: the folder is gone or most votes would go."""


#: A refresh may remove at most this share of the stored votes unless told otherwise.
DEFAULT_MAX_VOTE_LOSS_SHARE = 0.5


class _StagedVotes:
    """Appends each parsed row to the staged file, numbered in read order (``seq``)."""

    def __init__(self, rows: StagedRows):
        self.rows = rows
        self.seq = 0

    def error(self, source_file: str, line: int | None, reason: str, raw: str = "") -> None:
        self.rows.add((self.seq, None, None, None, source_file, line, None, raw, reason, None, False, None, None))
        self.seq += 1

    def vote(self, image: str, annotator: str, attributes: tuple[str, ...] | None, attribute_error: str | None,
             source_file: str, line: int, mtime_ns: int, raw: str) -> None:
        self.rows.add((self.seq, image, annotator, None if attributes is None else list(attributes), source_file,
                       line, mtime_ns, raw, None, attribute_error, is_review(annotator)))
        self.seq += 1


def stage_annotations(csv_files: Iterable[Path], plate_formats: Mapping[str, int | None], staged: Path) -> int:
    """Parse every CSV into the staged file ``staged`` (read order); returns the rows staged.
    ``plate_formats`` maps plate keys to formats (for numeric wells)."""
    with StagedRows(staged, annotation_table.VOTE_STAGE_SCHEMA) as rows:
        sink = _StagedVotes(rows)
        for path in csv_files:
            _read_one(Path(path), plate_formats, sink)
    return rows.rows


def sort_votes(staged_votes: Path, exceptions: Path, accepted: StagedRows, errors: StagedRows) -> None:
    """Split the staged rows into votes (``accepted``) and error rows with their reasons
    (``errors``), both in read order, from the candidates judged no vote (``exceptions``:
    ``warehouse.annotations.judge_votes``). Both files are read in ``seq`` order side by
    side, a batch at a time. A row's reason is the first that applies: its early error, an
    unknown image, unknown attributes, then a repeated vote."""
    pending = _exceptions_in_order(exceptions)
    exception = next(pending, None)
    for batch in batches(staged_votes):
        for row in batch.to_pylist():
            while exception is not None and exception["seq"] < row["seq"]:
                exception = next(pending, None)
            problem = exception if exception is not None and exception["seq"] == row["seq"] else None
            reason = _reason(row, problem)
            if reason is None:
                accepted.add((row["image_id"], row["annotator"], row["attributes"], row["source_file"],
                              row["source_line"], row["source_mtime_ns"]))
            else:
                errors.add((row["source_file"], row["source_line"], reason, row["raw"]))


def _exceptions_in_order(exceptions: Path) -> Iterator[dict]:
    for batch in batches(exceptions):
        yield from batch.to_pylist()


def _reason(row: dict, problem: dict | None) -> str | None:
    """Why a staged row is no vote (None: it is one)."""
    if row["reason"] is not None:
        return row["reason"]
    if problem is not None and problem["problem"] == "unknown":
        return f"unknown image {row['image_id']!r}: no file for this well"
    if row["attribute_error"] is not None:
        return row["attribute_error"]
    if problem is not None:
        return (f"duplicate annotation of {row['image_id']} by {row['annotator']!r} "
                f"(first at {problem['first_file']}:{problem['first_line']})")
    return None


def _stage_and_sort(csv_files, plate_formats, folder: Path, judge) -> tuple[Path, Path]:
    """Stage the CSVs' rows under ``folder``, ``judge(staged, exceptions)`` them, and sort them
    into the staged votes and error rows to store (their paths)."""
    stage_annotations(csv_files, plate_formats, folder / "rows.parquet")
    judge(folder / "rows.parquet", folder / "exceptions.parquet")
    with StagedRows(folder / "votes.parquet", annotation_table.ANNOTATION_SCHEMA) as accepted, \
            StagedRows(folder / "errors.parquet", annotation_table.ANNOTATION_ERROR_SCHEMA) as errors:
        sort_votes(folder / "rows.parquet", folder / "exceptions.parquet", accepted, errors)
    return accepted.path, errors.path


def refresh_annotations(warehouse: Warehouse, csv_files: Iterable[Path], plate_formats: Mapping[str, int | None],
                        *, folder: Path, max_vote_loss_share: float = DEFAULT_MAX_VOTE_LOSS_SHARE,
                        allow_vote_loss: bool = False) -> annotation_table.StoredAnnotations:
    """Make ``annotations`` and ``annotation_errors`` hold exactly what the CSVs say, in one
    transaction; annotations of ids with no ``images`` row are error rows.

    Raises :class:`AnnotationRefreshRefused`, with nothing written, when ``folder`` (the
    annotations folder) is missing or unreadable or the refresh would remove more than
    ``max_vote_loss_share`` of the stored votes (:func:`refuse_vote_loss`).
    """
    warehouse.ensure_schema()

    def refuse(loss: annotation_table.VoteLoss) -> None:
        refuse_vote_loss(folder, loss.stored, loss.read, loss.lost, max_vote_loss_share=max_vote_loss_share,
                         allow_vote_loss=allow_vote_loss)

    with warehouse.staging() as staging:
        accepted, errors = _stage_and_sort(
            csv_files, plate_formats, staging,
            lambda rows, exceptions: annotation_table.judge_stored_votes(warehouse, rows, exceptions))
        return annotation_table.replace_staged_annotations(warehouse, accepted, errors, refuse)


def read_annotations(
    csv_files: Iterable[Path],
    plate_formats: Mapping[str, int | None],
    known_image_ids: set[str],
) -> AnnotationTable:
    """Parse every CSV. ``plate_formats`` maps plate keys to formats (for numeric
    wells); ``known_image_ids`` are the ids in ``images`` (annotations of other ids
    are errors: an annotation must name an image the archive holds). In memory: for
    small callers (a review file, a benchmark); the asset uses :func:`refresh_annotations`."""
    table = AnnotationTable()
    with tempfile.TemporaryDirectory(prefix="annotations-") as tmp:
        accepted, errors = _stage_and_sort(
            csv_files, plate_formats, Path(tmp),
            lambda rows, exceptions: annotation_table.judge_votes_against(known_image_ids, rows, exceptions))
        for batch in batches(accepted):
            table.annotations.extend(
                Annotation(r["image_id"], r["annotator"], tuple(r["attributes"]), r["source_file"], r["source_line"],
                           r["source_mtime_ns"]) for r in batch.to_pylist())
        for batch in batches(errors):
            table.errors.extend(AnnotationError(r["source_file"], r["source_line"], r["reason"], r["raw"])
                                for r in batch.to_pylist())
    return table


def _read_one(path: Path, plate_formats, sink: _StagedVotes) -> None:
    """Stage one file's rows and error rows."""
    name = path.name

    def error(line: int | None, reason: str, raw: str = "") -> None:
        sink.error(name, line, reason, raw)

    try:
        mtime_ns = path.stat().st_mtime_ns
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        error(None, f"cannot open file: {exc.strerror or exc}")
        return
    with handle:
        reader = csv.reader(handle)
        header = _header(reader, error)
        if header is None:
            return
        col = {c: header.index(c) for c in header}
        for line, values in _records(reader, error):
            raw = ",".join(values)
            if len(values) != len(header):
                error(line, f"expected {len(header)} fields, found {len(values)}", raw)
                continue
            row = {c: values[i].strip() for c, i in col.items()}
            try:
                image = _row_image(row, plate_formats)
            except _RowError as exc:
                error(line, str(exc), raw)
                continue
            try:
                attributes, problem = tuple(sorted(parse_attributes(row["attributes"]))), None
            except UnknownAttribute as exc:
                attributes, problem = None, str(exc)
            sink.vote(image, row["annotator"], attributes, problem, name, line, mtime_ns, raw)


def _header(reader, error) -> list[str] | None:
    """The lower-cased header, or None (and an error row) when it is missing or lacks a column."""
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        error(None, "empty file: no header row")
        return None
    except (csv.Error, UnicodeDecodeError) as exc:
        error(1, f"unreadable header: {exc}")
        return None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        error(1, f"header lacks column(s) {', '.join(missing)}", ",".join(header))
        return None
    return header


def _records(reader, error) -> Iterator[tuple[int, list[str]]]:
    """``(line, values)`` of every non-blank row; a row the csv module cannot parse becomes
    an error row and reading goes on."""
    line = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            line += 1
            error(line, f"unparseable row: {exc}")
            continue
        line = reader.line_num
        if any(v.strip() for v in values):
            yield line, values


class _RowError(ValueError):
    """Why one row is not an annotation (becomes its error row's reason)."""


def _row_image(row: dict[str, str], plate_formats) -> str:
    """The image id a row names, checked in the order a reader fixes them: empty fields,
    plate, well, drop. Whether that image exists, and then the attributes, are judged later
    (``warehouse.annotations.resolve_votes``), in that order."""
    empty = [c for c in REQUIRED_COLUMNS if not row[c]]
    if empty:
        raise _RowError(f"missing field(s) {', '.join(empty)}")
    inspection = row.get("inspection") or None
    key = plate_key(row["plate_id"], inspection)
    if key not in plate_formats:
        raise _RowError(f"unknown plate {key!r}")
    try:
        well = wells.parse_well(row["well"], plate_formats[key])
    except wells.InvalidWell as exc:
        raise _RowError(f"unknown well: {exc}") from None
    drop_text = (row.get("drop") or "").strip()
    if drop_text and not (drop_text.isdigit() and int(drop_text) >= 1):
        raise _RowError(f"bad drop {drop_text!r}: drops are numbered from 1")
    return wells.image_id(row["plate_id"], well.name, inspection, int(drop_text) if drop_text else 1)


def annotations_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be read as the annotations folder (None when it can).

    A missing or unreadable folder reads as "no annotations", which would replace every
    stored vote by none; the refresh must stop instead.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"the annotations folder {folder} is missing"
    try:
        next(iter(folder.iterdir()), None)
    except OSError as error:
        return f"the annotations folder {folder} is unreadable ({error.strerror or error})"
    return None


def refuse_destructive_refresh(folder: Path, stored: Iterable[tuple[str, str]], read: Iterable[tuple[str, str]], *,
                               max_vote_loss_share: float = DEFAULT_MAX_VOTE_LOSS_SHARE,
                               allow_vote_loss: bool = False) -> int:
    """:func:`refuse_vote_loss` for ``stored`` and ``read``, the ``(image_id, annotator)``
    votes in the warehouse and in the CSVs just read; a stored vote that is not read again
    is lost (a renamed CSV loses none). Returns the number of votes the refresh removes."""
    stored, read = set(stored), set(read)
    return refuse_vote_loss(folder, len(stored), len(read), len(stored - read),
                            max_vote_loss_share=max_vote_loss_share, allow_vote_loss=allow_vote_loss)


def refuse_vote_loss(folder: Path, stored: int, read: int, lost: int, *,
                     max_vote_loss_share: float = DEFAULT_MAX_VOTE_LOSS_SHARE, allow_vote_loss: bool = False) -> int:
    """Raise :class:`AnnotationRefreshRefused` before a refresh that would wipe the votes.

    ``stored`` and ``read`` count the distinct ``(image_id, annotator)`` votes in the
    warehouse and in the CSVs just read, ``lost`` the stored ones not read again. Refused:
    a missing or unreadable folder, or losing more than ``max_vote_loss_share`` of the
    stored votes. ``allow_vote_loss`` lets both through (a deliberate clean-up). Returns
    ``lost``, the number of votes the refresh removes.
    """
    knob = "set allow_vote_loss: true (or raise max_vote_loss_share) in the annotations asset's run config"
    problem = annotations_folder_problem(folder)
    if problem and not allow_vote_loss:
        loss = (f"which would remove all {stored} stored votes" if stored
                else "an archive's annotations folder is required even before any vote is stored")
        raise AnnotationRefreshRefused(
            f"{problem}: refusing to refresh the annotations, {loss}; nothing was written. "
            f"Restore the folder, or {knob} to accept it.")
    share = lost / stored if stored else 0.0
    if share > max_vote_loss_share and not allow_vote_loss:
        raise AnnotationRefreshRefused(
            f"refusing to refresh the annotations from {folder}: {lost} of the {stored} stored votes "
            f"({100 * share:.0f}%) are no longer in its CSVs ({read} votes read), more than "
            f"max_vote_loss_share = {max_vote_loss_share}; nothing was written. Restore the missing CSVs, or "
            f"{knob} to accept the loss.")
    return lost
