"""Markdown as both reports and the Dagster UI render it: table cells, tables, images.

One renderer, so a pipe or a line break in a value (an error message, a cocktail,
a model name) never breaks a table in one place after being fixed in another.
Everything returns text; nothing here imports pandas or matplotlib (the plate report
runs on GPU boxes without them), and :func:`frame_table` takes a pandas frame only
from callers that already hold one.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from crystal_pipeline.reporting.embed import data_uri

#: Separator cell per column alignment: ``l`` left (Markdown's default), ``r`` right.
_ALIGN = {"l": "---", "r": "---:"}


def cell(value: Any) -> str:
    """``value`` as one table cell: ``|`` escaped, line breaks flattened to spaces."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def row(cells: Iterable[Any]) -> str:
    """``| a | b |``, every cell escaped with :func:`cell`."""
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` has one ``l``/``r`` per column (default: all ``l``)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} columns, the header {len(header)}")
    separator = "| " + " | ".join(_ALIGN[a] for a in align) + " |"
    return "\n".join([row(header), separator, *(row(r) for r in rows)])


def key_value_table(pairs: Iterable[tuple[Any, Any]]) -> str:
    """A two-column table with an empty header, for a summary (``| plate | P1 |``)."""
    return "\n".join(["| | |", "| --- | --- |", *(row(pair) for pair in pairs)])


def frame_table(frame, max_rows: int = 20, *, total: int | None = None) -> str:
    """A pandas frame as a table of at most ``max_rows`` rows, saying how many were left out.

    Missing values (None, NaN, NaT, ``pd.NA``) show as empty cells; an empty frame
    as ``_none_``. ``total``: the rows of the whole table when ``frame`` holds only its
    first ones (a large table read back only as far as it is shown).
    """
    total = len(frame) if total is None else total
    if total == 0:
        return "_none_"
    import pandas as pd  # the caller holds a frame, so pandas is loaded already

    shown = frame.head(max_rows)
    body = [["" if pd.isna(v) else v for v in values] for values in shown.itertuples(index=False)]
    text = table([str(c) for c in shown.columns], body)
    if total > max_rows:
        text += f"\n\n_{total - max_rows} more rows not shown_"
    return text


def image(png: bytes, alt: str = "figure") -> str:
    """A PNG embedded as a Markdown image (base64 data URI)."""
    return f"![{alt}]({data_uri(png)})"


def blocks(*parts: str) -> str:
    """Non-empty ``parts`` as Markdown blocks (paragraphs, tables, images) separated by a blank line."""
    return "\n\n".join(p for p in parts if p)
