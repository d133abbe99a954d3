"""Wells and plate formats: the only module that knows how a plate is laid out.

Rows run A..Z then AA..AF (1536-well plates have 32 rows); the canonical well name is
the row letters plus a two-digit column (``A01``, ``AF48``). A well may also be
given as its 1-based row-major index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# format -> (rows, cols)
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}

_WELL_NAME = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,2})$")
_WELL_INDEX = re.compile(r"^0*(\d{1,4})$")
# Column-first, as some imagers write it: ``01A`` is A01, ``12AF`` is AF12.
_WELL_COLUMN_FIRST = re.compile(r"^0*(\d{1,2})([A-Za-z]{1,2})$")


class InvalidWell(ValueError):
    """A well name that exists on no supported plate."""


@dataclass(frozen=True)
class Well:
    row: int  # 1-based
    col: int  # 1-based

    @property
    def name(self) -> str:
        return f"{row_letters(self.row)}{self.col:02d}"

    def index(self, plate_format: int) -> int:
        """1-based row-major index on a plate of the given format."""
        _, cols = PLATE_FORMATS[plate_format]
        return (self.row - 1) * cols + self.col


def row_letters(row: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA, 32 -> AF."""
    if row < 1:
        raise InvalidWell(f"row {row} out of range")
    if row <= 26:
        return chr(ord("A") + row - 1)
    return "A" + chr(ord("A") + row - 27)


def _row_number(letters: str) -> int:
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A") + 1
    if letters[0] != "A":
        raise InvalidWell(f"row {letters!r} does not exist")
    return 26 + ord(letters[1]) - ord("A") + 1


def parse_well(text: str, plate_format: int | None = None) -> Well:
    """Parse ``A01``/``a1``/``AF48``, column-first ``01A``, or a row-major index (``1``..``1536``).

    A numeric index needs the plate format to know the row length; without one the
    1536-well layout is assumed, the largest that exists. Raises InvalidWell for
    names that fit no supported plate (or not the given format).
    """
    text = text.strip()
    max_rows, max_cols = PLATE_FORMATS[plate_format or 1536]
    m = _WELL_NAME.match(text)
    column_first = None if m else _WELL_COLUMN_FIRST.match(text)
    if m:
        row = _row_number(m.group(1))
        col = int(m.group(2))
    elif column_first:
        row = _row_number(column_first.group(2))
        col = int(column_first.group(1))
    else:
        m = _WELL_INDEX.match(text)
        if not m:
            raise InvalidWell(f"not a well name: {text!r}")
        index = int(m.group(1))
        if not 1 <= index <= max_rows * max_cols:
            raise InvalidWell(f"well index {index} outside a {plate_format or 1536}-well plate")
        row, col = divmod(index - 1, max_cols)
        row, col = row + 1, col + 1
    if not (1 <= row <= max_rows and 1 <= col <= max_cols):
        raise InvalidWell(f"well {text!r} outside a {plate_format or 1536}-well plate")
    return Well(row, col)


def smallest_format_holding(wells) -> int:
    """The smallest supported format on which every given well exists."""
    max_row = max((w.row for w in wells), default=1)
    max_col = max((w.col for w in wells), default=1)
    for fmt, (rows, cols) in sorted(PLATE_FORMATS.items()):
        if max_row <= rows and max_col <= cols:
            return fmt
    raise InvalidWell(f"no plate format holds row {max_row}, column {max_col}")


def all_wells(plate_format: int) -> list[Well]:
    rows, cols = PLATE_FORMATS[plate_format]
    return [Well(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]


def slot_name(well_name: str, drop: int = 1) -> str:
    """One drop of a well as text: ``A01`` for drop 1, ``A01_2`` for drop 2 (the canonical
    file-name spelling ``<well>[_<drop>]``). Drop 1 keeps the bare well name so image ids
    of single-drop archives are what they were before drops existed."""
    if drop < 1:
        raise InvalidWell(f"drop {drop} of well {well_name}: drops are numbered from 1")
    return well_name if drop == 1 else f"{well_name}_{drop}"


#: What a UV picture's image id adds to its visible partner's (``P1/A01_2`` -> ``P1/A01_2.uv``).
UV_ID_SUFFIX = ".uv"


def image_id(plate_id: str, well_name: str, inspection: str | None = None, drop: int = 1,
             imaging: str = "visible") -> str:
    """``<plate_id>[@<inspection>]/<well>[_<drop>][.uv]``: readable and stable across re-ingests.
    A visible picture's id is what it was before UV existed; its UV partner's adds ``.uv``."""
    key = plate_id if not inspection else f"{plate_id}@{inspection}"
    return f"{key}/{slot_name(well_name, drop)}{UV_ID_SUFFIX if imaging == 'uv' else ''}"


def missing_wells(present: Iterable[str], plate_format: int, drops: int = 1) -> list[str]:
    """Slot names (:func:`slot_name`) of the format's wells and drops not among ``present``,
    row-major, drops of a well together.

    One definition for the plate checks, the labelling summary and the report, so the
    three never disagree on what "missing" means (a well or drop with no file at all).
    ``present`` holds slot names: ``A01`` (drop 1), ``A01_2`` ...
    """
    if plate_format not in PLATE_FORMATS:
        raise InvalidWell(f"unknown plate format {plate_format}: use one of {sorted(PLATE_FORMATS)}")
    present = set(present)
    return [slot_name(w.name, d) for w in all_wells(plate_format) for d in range(1, max(1, drops) + 1)
            if slot_name(w.name, d) not in present]
