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

import numpy as np

from crystal_pipeline.classes import ATTRIBUTES
from crystal_pipeline.files import atomic_write_text

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


def _broken(rng: np.random.Generator, kind: str, row: dict[str, str], unknown_plate: str) -> dict[str, str]:
    bad = dict(row)
    if kind == "unknown_attribute":
        bad["annotator"] = OUTSIDER
        bad["attributes"] = UNKNOWN_ATTRIBUTES[int(rng.integers(len(UNKNOWN_ATTRIBUTES)))]
    elif kind == "unknown_well":
        bad["well"] = UNKNOWN_WELL
    elif kind == "unknown_plate":
        bad["plate_id"] = unknown_plate
    elif kind == "missing_field":
        bad["annotator" if rng.random() < 0.5 else "attributes"] = ""
    return bad  # duplicate_row: the same plate, well and annotator again


def insert_malformed(
    rng: np.random.Generator, files: dict[str, list[dict[str, str]]], counts: dict[str, int], unknown_plate: str
) -> dict[str, list[dict[str, str]]]:
    """Each file's rows with the broken ones placed after a random valid row.

    A duplicate always follows the row it repeats, so whichever file order the ingest
    uses, the first occurrence is the valid one.
    """
    names = sorted(files)
    inserts: dict[str, dict[int, list[dict[str, str]]]] = {name: {} for name in names}
    for kind in MALFORMED_KINDS:
        for _ in range(counts[kind]):
            name = names[int(rng.integers(len(names)))]
            while not files[name]:
                name = names[int(rng.integers(len(names)))]
            at = int(rng.integers(len(files[name])))
            inserts[name].setdefault(at, []).append(_broken(rng, kind, files[name][at], unknown_plate))
    out = {}
    for name in names:
        rows = []
        for i, row in enumerate(files[name]):
            rows.append(row)
            rows.extend(inserts[name].get(i, []))
        out[name] = rows
    return out


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write UTF-8 CSV atomically (:func:`crystal_pipeline.files.atomic_write_text`): a watcher
    never reads half a file."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
