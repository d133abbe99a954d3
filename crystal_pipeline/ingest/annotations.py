"""Reading the experts' annotation CSVs without losing a row or crashing on one.

Each CSV has a header and the columns ``plate_id``, ``well``, ``annotator``,
``attributes`` and optionally ``inspection`` and ``drop`` (1 when absent), in any order. A row that cannot be
used (a missing field, an unknown attribute, a well or image that does not exist,
the same annotator twice for one image) becomes an error row with its file, line
and reason; all other rows go on. A reviewer (annotator ``review:<name>``) may review
one image again in a later file: both rows are kept, with their file's mtime, and
consensus takes the later one (:mod:`crystal_pipeline.ingest.reviews`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from crystal_pipeline import wells
from crystal_pipeline.ingest.archive import plate_key
from crystal_pipeline.classes import UnknownAttribute, parse_attributes
from crystal_pipeline.ingest.reviews import is_review

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


def read_annotations(
    csv_files: Iterable[Path],
    plate_formats: Mapping[str, int | None],
    known_image_ids: set[str],
) -> AnnotationTable:
    """Parse every CSV. ``plate_formats`` maps plate keys to formats (for numeric
    wells); ``known_image_ids`` are the ids in ``images`` (annotations of other ids
    are errors: an annotation must name an image the archive holds)."""
    table = AnnotationTable()
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for path in csv_files:
        _read_one(Path(path), plate_formats, known_image_ids, seen, table)
    return table


def _read_one(path, plate_formats, known_image_ids, seen, table: AnnotationTable) -> None:
    """Append one file's annotations and error rows to ``table``; ``seen`` spans all files."""
    name = path.name

    def error(line: int | None, reason: str, raw: str = "") -> None:
        table.errors.append(AnnotationError(name, line, reason, raw))

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
                image, attributes = _parse_row(row, plate_formats, known_image_ids)
            except _RowError as exc:
                error(line, str(exc), raw)
                continue
            annotator = row["annotator"]
            first = seen.get((image, annotator))
            if first is not None and (first[0] == name or not is_review(annotator)):
                error(line, f"duplicate annotation of {image} by {annotator!r} (first at {first[0]}:{first[1]})", raw)
                continue
            seen[(image, annotator)] = (name, line)
            table.annotations.append(Annotation(image, annotator, attributes, name, line, mtime_ns))


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


def _parse_row(row: dict[str, str], plate_formats, known_image_ids) -> tuple[str, tuple[str, ...]]:
    """``(image id, sorted attributes)`` of a row, checked in the order a reader fixes them:
    empty fields, plate, well, image, attributes."""
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
    image = wells.image_id(row["plate_id"], well.name, inspection, int(drop_text) if drop_text else 1)
    if image not in known_image_ids:
        raise _RowError(f"unknown image {image!r}: no file for this well")
    try:
        attributes = tuple(sorted(parse_attributes(row["attributes"])))
    except UnknownAttribute as exc:
        raise _RowError(str(exc)) from None
    return image, attributes


class AnnotationRefreshRefused(RuntimeError):
    """A refresh would destroy stored votes: the folder is gone or most votes would go."""


#: A refresh may remove at most this share of the stored votes unless told otherwise.
DEFAULT_MAX_VOTE_LOSS_SHARE = 0.5


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
    """Raise :class:`AnnotationRefreshRefused` before a refresh that would wipe the votes.

    ``stored`` and ``read`` are the ``(image_id, annotator)`` votes in the warehouse and
    in the CSVs just read; a stored vote that is not read again is lost (a renamed CSV
    loses none). Refused: a missing or unreadable folder, or losing more than
    ``max_vote_loss_share`` of the stored votes. ``allow_vote_loss`` lets both through
    (a deliberate clean-up). Returns the number of votes the refresh removes.
    """
    stored, read = set(stored), set(read)
    lost = len(stored - read)
    knob = "set allow_vote_loss: true (or raise max_vote_loss_share) in the annotations asset's run config"
    problem = annotations_folder_problem(folder)
    if problem and not allow_vote_loss:
        loss = (f"which would remove all {len(stored)} stored votes" if stored
                else "an archive's annotations folder is required even before any vote is stored")
        raise AnnotationRefreshRefused(
            f"{problem}: refusing to refresh the annotations, {loss}; nothing was written. "
            f"Restore the folder, or {knob} to accept it.")
    share = lost / len(stored) if stored else 0.0
    if share > max_vote_loss_share and not allow_vote_loss:
        raise AnnotationRefreshRefused(
            f"refusing to refresh the annotations from {folder}: {lost} of the {len(stored)} stored votes "
            f"({100 * share:.0f}%) are no longer in its CSVs ({len(read)} votes read), more than "
            f"max_vote_loss_share = {max_vote_loss_share}; nothing was written. Restore the missing CSVs, or "
            f"{knob} to accept the loss.")
    return lost
