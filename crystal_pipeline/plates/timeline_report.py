"""The time-course part of a plate report: new hits first, each hit across inspections.

Called by :func:`crystal_pipeline.plates.report.write_plate_report` when the plate has
a :class:`~crystal_pipeline.plates.timeline.Timeline`: the newest inspection's report
opens with the wells that became hits since the previous inspection, then shows each
hit's photographs at every inspection so a crystallographer sees the crystal grow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from crystal_pipeline.plates.timeline import Timeline, WellHistory
from crystal_pipeline.reporting import html
from crystal_pipeline.reporting import markdown as md
from crystal_pipeline.reporting.html import escape

#: Hits shown with their photographs across inspections (all are in timeline.csv).
TOP_HISTORIES = 12

Thumbnail = Callable[[Path], "bytes | None"]


def _label(inspection: str | None) -> str:
    return inspection or "(no inspection)"


def summary_items(timeline: Timeline, inspection: str | None) -> dict[str, str]:
    """Lines for the report's summary table."""
    if not timeline.follows_another(inspection):
        return {"inspections": f"{len(timeline.inspections)} (this is the first)"}
    return {"inspections": f"{len(timeline.inspections)}, previous {_label(timeline.previous(inspection))}",
            "new hits since previous inspection": str(len(timeline.new_hits(inspection)))}


def _new_hit_rows(timeline: Timeline, inspection: str | None) -> tuple[list[str], list[list[str]]]:
    before = timeline.previous(inspection)
    header = ["well", "drop", "crystal p now", f"crystal p at {_label(before)}", "class now", "first hit"]
    body = []
    for h in timeline.new_hits(inspection):
        now, then = h.at(inspection), h.at(before)
        body.append([h.well, str(h.drop), f"{now.crystal_prob:.3f}",
                     f"{then.crystal_prob:.3f}" if then else "not imaged", now.class_name, _label(h.first_hit)])
    return header, body


def markdown_lines(timeline: Timeline, inspection: str | None) -> list[str]:
    """The new-hits section in Markdown (empty at a plate's first inspection)."""
    if not timeline.follows_another(inspection):
        return []
    header, body = _new_hit_rows(timeline, inspection)
    title = f"## New hits since {_label(timeline.previous(inspection))} ({len(body)})"
    if not body:
        return [title, "", "No well became a hit since the previous inspection.", ""]
    return [title, "", md.table(header, body), ""]


def html_parts(timeline: Timeline, inspection: str | None, thumbnail: Thumbnail) -> list[str]:
    """New hits first (a table), then each current hit's photographs across inspections."""
    parts: list[str] = []
    if timeline.follows_another(inspection):
        header, body = _new_hit_rows(timeline, inspection)
        parts.append(f"<h2>New hits since {escape(_label(timeline.previous(inspection)))} ({len(body)})</h2>")
        if body:
            parts.append("<table>" + html.row(header, "th") + "".join(html.row(r) for r in body) + "</table>")
        else:
            parts.append("<p>No well became a hit since the previous inspection.</p>")
    hits = timeline.hits_at(inspection)
    if len(timeline.inspections) > 1 and hits:
        new = {h.slot for h in timeline.new_hits(inspection)}
        shown = sorted(hits, key=lambda h: h.slot not in new)[:TOP_HISTORIES]  # new ones first, stable
        parts.append(f"<h2>Hits across inspections ({len(shown)} of {len(hits)}; all in timeline.csv)</h2>")
        parts += [_history_strip(timeline, h, h.slot in new, thumbnail) for h in shown]
    return parts


def _history_strip(timeline: Timeline, history: WellHistory, is_new: bool, thumbnail: Thumbnail) -> str:
    title = f"<h3>{escape(history.slot)}{' (new)' if is_new else ''}: first hit {escape(_label(history.first_hit))}</h3>"
    figures = []
    for name in timeline.inspections:
        seen = history.at(name)
        if seen is None:
            body, caption = "<div style='height:160px;background:#eee'>not imaged</div>", escape(_label(name))
        else:
            thumb = thumbnail(seen.path) if seen.path else None
            body = (html.embedded_image(thumb, seen.image_id, "image/jpeg") if thumb
                    else "<div style='height:160px;background:#eee'>no preview</div>")
            mark = " &#9733;" if seen.crystal_prob >= timeline.threshold else ""
            caption = f"{escape(_label(name))}{mark}<br>p={seen.crystal_prob:.3f} {escape(seen.class_name)}"
        figures.append(f"<figure>{body}<figcaption>{caption}</figcaption></figure>")
    return title + "<div class='thumbs'>" + "".join(figures) + "</div>"
