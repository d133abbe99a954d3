"""Turning library results into Dagster metadata people want to read.

The text itself (tables, embedded figures) comes from
:mod:`crystal_pipeline.reporting.markdown`, the renderer the plate and evaluation reports
use, so the UI and the report files escape and lay out values the same way; this module
only wraps that text in Dagster's ``MetadataValue``.
"""

from __future__ import annotations

from dagster import MetadataValue

from crystal_pipeline.reporting import markdown

#: A PNG as a Markdown image (base64), for ``md(...)``.
png_md = markdown.image
#: A pandas frame as a Markdown table of at most ``max_rows`` rows.
table_md = markdown.frame_table


def md(*parts: str) -> MetadataValue:
    """Non-empty ``parts`` as one Markdown metadata value, a blank line between them."""
    return MetadataValue.md(markdown.blocks(*parts))


def progress_logger(context, what: str, every_fraction: float = 0.1):
    """A ``progress(done, total)`` callback that logs about every 10%."""
    state = {"next": 0}

    def progress(done: int, total: int) -> None:
        if total and (done >= state["next"] or done == total):
            context.log.info(f"{what}: {done}/{total} ({100 * done / total:.0f}%)")
            state["next"] = done + max(1, int(total * every_fraction))

    return progress
