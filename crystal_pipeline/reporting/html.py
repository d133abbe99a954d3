"""HTML pieces both reports build their pages from: escaping, table rows, embedded images.

Each report keeps its own page layout and style sheet (a plate report is a
crystallographer's work sheet, an evaluation a paper's tables); what they share is
how a value becomes safe HTML, so an id or a cocktail with ``<`` or ``&`` in it
can never break either page. Escaping is markupsafe's (the library Jinja2 escapes
with), and JSON inside a ``<script>`` element is :func:`script_json` (what Jinja's
``|tojson`` writes), so a plate named ``<!--<script>`` stays text.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import markupsafe

from crystal_pipeline.reporting.embed import data_uri


def escape(value: Any) -> str:
    """``str(value)`` with ``& < > " '`` escaped (safe in text and in quoted attributes)."""
    return str(markupsafe.escape(str(value)))


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside ``<script type='application/json'>``: ``<``, ``>``, ``&`` and
    ``'`` become ``\\u003c``, ``\\u003e``, ``\\u0026``, ``\\u0027``, so no value can close the element,
    open a comment (``<!--``) or end a quoted attribute; ``JSON.parse`` reads the same data back."""
    text = json.dumps(data, sort_keys=True)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("'", "\\u0027"))


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
