"""The annotation CSVs, including the deliberately broken rows a real archive has.

Real label exports carry typos, rows for plates that were thrown away, half-filled
rows and double submissions; the ingest must report each one and go on. A small,
exactly counted share of such rows is mixed in so the demo exercises that path and
tests can assert the error count.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, TextIO

import numpy as np

from crystal_pipeline.classes import ATTRIBUTES
from crystal_pipeline.files import atomic_write

COLUMNS = ("plate_id", "well", "annotator", "attributes")
# The numeric-well plate's file also shuffles its columns: DESIGN allows any order.
SHUFFLED_COLUMNS = ("annotator", "well", "plate_id", "attributes")

MALFORMED_KINDS = ("unknown_attribute", "unknown_well", "unknown_plate", "missing_field", "duplicate_row")
UNKNOWN_ATTRIBUTES = ("needles", "crystal;spherulite", "cloudy", "precipitat", "microcrystals;precipitate")
UNKNOWN_WELL = "Z99"
OUTSIDER = "trainee01"  # annotator of the unknown-attribute rows, never on the real panel


def attribute_field(attributes) -> str:
    """``;``-joined in the canonical attribute order, so equal sets give equal text."""
    return ";".join(a for a in ATTRIBUTES if a in attributes)


def malformed_counts(rng: np.random.Generator, valid_rows: int, share: float) -> dict[str, int]:
    """How many broken rows of each kind: ``share`` of the valid rows, at least one each."""
    if share <= 0 or valid_rows == 0:
        return {kind: 0 for kind in MALFORMED_KINDS}
    total = max(len(MALFORMED_KINDS), int(round(share * valid_rows)))
    counts = {kind: total // len(MALFORMED_KINDS) for kind in MALFORMED_KINDS}
    for i in rng.permutation(len(MALFORMED_KINDS))[: total % len(MALFORMED_KINDS)]:
        counts[MALFORMED_KINDS[i]] += 1
    return counts


def _breakage(rng: np.random.Generator, kind: str, unknown_plate: str) -> dict[str, str]:
    """The fields a broken row of ``kind`` changes in the valid row it copies (the same
    draws, in the same order, as when the rows were broken in memory)."""
    if kind == "unknown_attribute":
        return {"annotator": OUTSIDER, "attributes": UNKNOWN_ATTRIBUTES[int(rng.integers(len(UNKNOWN_ATTRIBUTES)))]}
    if kind == "unknown_well":
        return {"well": UNKNOWN_WELL}
    if kind == "unknown_plate":
        return {"plate_id": unknown_plate}
    if kind == "missing_field":
        return {"annotator" if rng.random() < 0.5 else "attributes": ""}
    return {}  # duplicate_row: the same plate, well and annotator again


#: Per file name: valid row index -> the changes of each broken row placed after it, in order.
MalformedPlan = dict[str, dict[int, list[dict[str, str]]]]


def malformed_plan(rng: np.random.Generator, row_counts: Mapping[str, int], counts: dict[str, int],
                   unknown_plate: str) -> MalformedPlan:
    """Where the broken rows go, from each file's count of valid rows alone.

    Each broken row copies a random valid row with some fields changed; a duplicate
    always follows the row it repeats, so whichever file order the ingest uses, the
    first occurrence is the valid one. Only the counts are needed, not the rows, so
    the generator can write every plate's rows as it finishes and place the broken
    ones when it copies them into the final files (:func:`with_malformed`). The plan
    holds one small dict per broken row (``share`` of the rows, 0.5% by default).
    """
    names = sorted(row_counts)
    plan: MalformedPlan = {name: {} for name in names}
    for kind in MALFORMED_KINDS:
        for _ in range(counts[kind]):
            name = names[int(rng.integers(len(names)))]
            while not row_counts[name]:
                name = names[int(rng.integers(len(names)))]
            at = int(rng.integers(row_counts[name]))
            plan[name].setdefault(at, []).append(_breakage(rng, kind, unknown_plate))
    return plan


def with_malformed(rows: Iterable[dict[str, str]], inserts: Mapping[int, list[dict[str, str]]]
                   ) -> Iterator[dict[str, str]]:
    """One file's valid rows with its planned broken rows (:func:`malformed_plan`) after the
    row each copies; streams, holding one row at a time."""
    for i, row in enumerate(rows):
        yield row
        for changes in inserts.get(i, ()):
            yield {**row, **changes}


def csv_writer(handle: TextIO, columns: Sequence[str]) -> csv.DictWriter:
    """The archive's one CSV dialect (``\\n`` line ends, minimal quoting), so rows written
    apart (a plate's staged rows) and rows written together give the same bytes."""
    return csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Write UTF-8 CSV atomically (:func:`crystal_pipeline.files.atomic_write`): a watcher
    never reads half a file. ``rows`` may be a generator: they stream to the temp file,
    so the file is never held whole in memory."""
    def write(handle) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv_writer(text, columns)
        writer.writeheader()
        writer.writerows(rows)
        text.flush()
        text.detach()  # atomic_write flushes, fsyncs and closes the handle itself

    atomic_write(path, write)
