"""Turning library results into Dagster metadata people want to read."""

from __future__ import annotations

import base64

import pandas as pd
from dagster import MetadataValue


def png_md(png: bytes, alt: str = "figure") -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def table_md(frame: pd.DataFrame, max_rows: int = 20) -> str:
    """A Markdown table of at most ``max_rows`` rows, saying how many were left out."""
    if frame.empty:
        return "_none_"
    shown = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v).replace("|", "\\|") for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows not shown_")
    return "\n".join(lines)


def md(*parts: str) -> MetadataValue:
    return MetadataValue.md("\n\n".join(p for p in parts if p))


def progress_logger(context, what: str, every_fraction: float = 0.1):
    """A ``progress(done, total)`` callback that logs about every 10%."""
    state = {"next": 0}

    def progress(done: int, total: int) -> None:
        if total and (done >= state["next"] or done == total):
            context.log.info(f"{what}: {done}/{total} ({100 * done / total:.0f}%)")
            state["next"] = done + max(1, int(total * every_fraction))

    return progress
