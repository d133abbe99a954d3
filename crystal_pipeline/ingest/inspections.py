"""The order of a plate's inspections: the one rule every time course uses.

An inspection is a folder name (``incoming/<plate>/<inspection>/``). Imagers name them
by date or time, but not all the same way, and by name alone ``day10`` sorts before
``day2`` and a mix of ``2024-03-05`` and ``20240304_0900`` sorts by spelling, not time. So an inspection is read as a date/time when it parses:

- ISO 8601 dates and date-times (``2024-03-05``, ``2024-03-05T14:30``, ``2024-03-05 14:30:00``);
- ``YYYYMMDD`` (``20240305``);
- ``YYYYMMDD_HHMMSS`` or ``YYYYMMDD-HHMMSS`` (``20240305_143000``);

and inspections that parse come first, in time order (ties by name); those that do not
(``day3``, ``week2``) follow, by name with their numbers compared as numbers
(``day2`` before ``day10``). docs/plate_labelling.md tells labs the same.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Iterable

_COMPACT = re.compile(r"^(\d{8})(?:[_\-T](\d{6}))?$")
_DIGITS = re.compile(r"(\d+)")


def inspection_time(name: str) -> _dt.datetime | None:
    """The date/time an inspection folder name says, or None when it says none."""
    text = name.strip()
    m = _COMPACT.match(text)
    try:
        if m:
            return _dt.datetime.strptime(m.group(1) + (m.group(2) or "000000"), "%Y%m%d%H%M%S")
        if re.match(r"^\d{4}-\d{2}-\d{2}", text):
            return _dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return None
    return None


def inspection_sort_key(name: str | None) -> tuple:
    """Sort key: no inspection first, then parsed times in order, then other names naturally."""
    if name is None:
        return (0,)
    when = inspection_time(name)
    if when is not None:
        return (1, when, name)
    natural = tuple((0, int(p)) if p.isdigit() else (1, p) for p in _DIGITS.split(name) if p)
    return (2, natural, name)


def order_inspections(names: Iterable[str | None]) -> list[str | None]:
    """Distinct inspection names, earliest first (:func:`inspection_sort_key`)."""
    return sorted(set(names), key=inspection_sort_key)
