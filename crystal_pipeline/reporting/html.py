"""HTML pieces both reports build their pages from: escaping, table rows, embedded images.

Each report keeps its own page layout and style sheet (a plate report is a
crystallographer's work sheet, an evaluation a paper's tables); what they share is
how a value becomes safe HTML, so an id or a cocktail with ``<`` or ``&`` in it
can never break either page.
"""

from __future__ import annotations

import html as _html
from typing import Any, Sequence

from crystal_pipeline.reporting.embed import data_uri


def escape(value: Any) -> str:
    """``str(value)`` with ``& < > " '`` escaped (safe in text and in quoted attributes)."""
    return _html.escape(str(value))


def cells(values: Sequence[Any], tag: str = "td") -> str:
    """``<td>a</td><td>b</td>`` (or ``th``), every value escaped."""
    return "".join(f"<{tag}>{escape(v)}</{tag}>" for v in values)


def row(values: Sequence[Any], tag: str = "td", *, row_header: bool = False) -> str:
    """One ``<tr>``; with ``row_header`` the first cell is a ``<th>`` (a row's label)."""
    if row_header:
        return "<tr>" + cells(values[:1], "th") + cells(values[1:], tag) + "</tr>"
    return "<tr>" + cells(values, tag) + "</tr>"


def embedded_image(data: bytes, alt: str, mime: str = "image/png") -> str:
    """An ``<img>`` carrying its picture as a data URI, so the page needs no other file."""
    return f"<img alt='{escape(alt)}' src='{data_uri(data, mime)}'>"
