"""Numbers as people and JSON read them: a NaN (an undefined metric) becomes None.

Metrics are NaN where they are undefined (an AUC with one class present, a recall
with no positives). Dagster metadata, JSON and DuckDB want ``None`` there, and a
reader wants a few digits, not seventeen.
"""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any, digits: int | None = 4) -> float | None:
    """``value`` as a float rounded to ``digits`` (None: not rounded), or None when it is
    None, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return number if digits is None else round(number, digits)
