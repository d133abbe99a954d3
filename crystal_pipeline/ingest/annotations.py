"""Reading the experts' annotation CSVs without losing a row or crashing on one.

Each CSV has a header and the columns ``plate_id``, ``well``, ``annotator``,
``attributes`` and optionally ``inspection``, in any order. A row that cannot be
used (a missing field, an unknown attribute, a well or image that does not exist,
the same annotator twice for one image) becomes an error row with its file, line
and reason; all other rows go on.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from crystal_pipeline import wells
from crystal_pipeline.ingest.archive import plate_key
from crystal_pipeline.classes import UnknownAttribute, parse_attributes

REQUIRED_COLUMNS = ("plate_id", "well", "annotator", "attributes")


@dataclass(frozen=True)
class Annotation:
    image_id: str
    annotator: str
    attributes: tuple[str, ...]  # sorted, normalized
    source_file: str
    source_line: int


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
    name = path.name

    def error(line: int | None, reason: str, raw: str = "") -> None:
        table.errors.append(AnnotationError(name, line, reason, raw))

    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        error(None, f"cannot open file: {exc.strerror or exc}")
        return
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            error(None, "empty file: no header row")
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            error(1, f"unreadable header: {exc}")
            return
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            error(1, f"header lacks column(s) {', '.join(missing)}", ",".join(header))
            return
        col = {c: header.index(c) for c in header}
        line = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                line += 1
                error(line, f"unparseable row: {exc}")
                continue
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            raw = ",".join(values)
            if len(values) != len(header):
                error(line, f"expected {len(header)} fields, found {len(values)}", raw)
                continue
            row = {c: values[i].strip() for c, i in col.items()}
            empty = [c for c in REQUIRED_COLUMNS if not row[c]]
            if empty:
                error(line, f"missing field(s) {', '.join(empty)}", raw)
                continue
            inspection = row.get("inspection") or None
            key = plate_key(row["plate_id"], inspection)
            if key not in plate_formats:
                error(line, f"unknown plate {key!r}", raw)
                continue
            try:
                well = wells.parse_well(row["well"], plate_formats[key])
            except wells.InvalidWell as exc:
                error(line, f"unknown well: {exc}", raw)
                continue
            image = wells.image_id(row["plate_id"], well.name, inspection)
            if image not in known_image_ids:
                error(line, f"unknown image {image!r}: no file for this well", raw)
                continue
            try:
                attributes = tuple(sorted(parse_attributes(row["attributes"])))
            except UnknownAttribute as exc:
                error(line, str(exc), raw)
                continue
            annotator = row["annotator"]
            first = seen.get((image, annotator))
            if first is not None:
                error(line, f"duplicate annotation of {image} by {annotator!r} (first at {first[0]}:{first[1]})", raw)
                continue
            seen[(image, annotator)] = (name, line)
            table.annotations.append(Annotation(image, annotator, attributes, name, line))
