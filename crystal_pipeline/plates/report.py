"""A labelled plate as a crystallographer reads it: map, ranked hit list, thumbnails.

Files written into ``out_dir`` (each with :func:`crystal_pipeline.files.atomic_write`,
so a reader, e.g. the Dagster UI or a browser refreshing, never sees half a file):

- ``plate_map.png``: the plate's grid (:mod:`crystal_pipeline.reporting.plate_map`), each
  well coloured by predicted class, a black dot sized by crystal probability, a large
  gold star on the hits to review first and a small star on the other hits, quarantined
  wells hatched with a ``Q``, missing wells left pale grey (no map for loose images whose
  names are not wells);
- ``hits.csv``: every labelled image ranked by crystal probability (highest first)
  with ``hit`` and ``review_first`` columns, MARCO's four-class outcome (``marco_class``), all 10 probabilities, the image path and, when known, the
  protein and the well's cocktail (a hit without its condition is not actionable), and last
  ``crystal_x``, ``crystal_y``: where in the picture (fractions of its width and height) the
  model's crystal map peaks, for every hit the model could trace (:mod:`crystal_pipeline.model.cam`);
- ``hits.meta.json``: beside ``hits.csv`` (whose columns stay as readers know them), what
  produced it: model version, hit threshold, the inference ``engine`` and ``precision``;
- ``quarantined.csv``: what could not be labelled, and why;
- ``report.html``: self-contained (images embedded as base64): banner, summary,
  map, thumbnails of the top hits (the crystal map laid over each, :mod:`.heatmap`), hit table,
  quarantine list, and the review page
  (:mod:`crystal_pipeline.plates.review_page`: a queue of doubtful wells, the seven
  attributes by mouse or keyboard, a corrections CSV to export);
- ``report.md``: the same summary for the Dagster UI, the map embedded.

Tables, escaping and embedded images come from :mod:`crystal_pipeline.reporting.markdown`
and :mod:`~crystal_pipeline.reporting.html`, which the evaluation report uses too.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from crystal_pipeline import wells
from crystal_pipeline.classes import CLASS_NAMES, CLASS_TITLES, MARCO_CLASSES
from crystal_pipeline.files import atomic_write_bytes, atomic_write_text
from crystal_pipeline.plates import heatmap, timeline_report
from crystal_pipeline.plates.labelling import LabelledImage, PlateLabels
from crystal_pipeline.plates.review_page import review_section
from crystal_pipeline.plates import second_opinion as opinion
from crystal_pipeline.plates.second_opinion import SecondOpinion
from crystal_pipeline.plates.uv_thumbnail import uv_thumbnail_html
from crystal_pipeline.plates.timeline import Timeline
from crystal_pipeline.reporting import html
from crystal_pipeline.reporting import markdown as md
from crystal_pipeline.reporting.html import escape
from crystal_pipeline.reporting.plate_map import plate_map_png

#: Thumbnails in the HTML page; more hits are in the CSV.
TOP_THUMBNAILS = 24
#: Hit rows in the Markdown (the Dagster UI truncates long metadata anyway).
TOP_MARKDOWN_ROWS = 10
THUMBNAIL_PX = 160
#: The metadata sidecar of hits.csv.
HITS_META = "hits.meta.json"
#: The review budget when the config sets none: the top 5% of a plate's labelled images, at
#: least 8 (77 of a 1536-well plate, 20 of 384, 8 of 96). The hit threshold is set for 95%
#: crystal recall, so a weak model flags most of a plate; the budget is the first pass an
#: expert can do in one sitting, and the map marks it apart from the rest of the hits.
DEFAULT_REVIEW_SHARE = 0.05
MIN_REVIEW_WELLS = 8
SYNTHETIC_BANNER = ("This plate was labelled by a model trained on synthetic images. Its labels show that the "
                    "pipeline runs; they are not evidence about real crystals.")


def default_review_wells(n_labelled: int) -> int:
    """Wells in the default review budget for a plate with ``n_labelled`` labelled images."""
    return min(n_labelled, max(MIN_REVIEW_WELLS, math.ceil(DEFAULT_REVIEW_SHARE * n_labelled)))


@dataclass(frozen=True)
class PlateReport:
    paths: dict[str, Path]
    markdown: str
    map_png: bytes | None
    hits: list[LabelledImage]
    review_first: list[LabelledImage]  # the hits inside the review budget, highest crystal_prob first
    calls_differ: list[str] | None = None  # slots whose crystal call the second opinion makes otherwise
    map_visible_png: bytes | None = None  # the map coloured by the second opinion's calls


@dataclass(frozen=True)
class ReviewBudget:
    """The wells to review first: the ``wells`` highest calibrated crystal probabilities, and
    the share of the plate's expected crystals (sum of crystal_prob) they hold."""

    wells: int
    expected_recall: float
    expected_crystals: float

    def describe(self) -> str:
        return (f"top {self.wells} wells by crystal_prob hold an expected {100 * self.expected_recall:.0f}% of "
                f"the plate's {self.expected_crystals:.1f} expected crystals")


def review_budget(rows: list[LabelledImage], *, top_n: int | None = None,
                  recall: float | None = None) -> ReviewBudget | None:
    """The review budget of a plate: the top ``top_n`` wells, or the fewest wells whose summed
    calibrated crystal_prob reaches ``recall`` of the plate's total (calibrated probabilities
    make that sum the expected number of crystals). None when neither is set."""
    if top_n is None and recall is None:
        return None
    if top_n is not None and top_n < 0 or recall is not None and not 0.0 < recall <= 1.0:
        raise ValueError(f"review budget needs top_n >= 0 or recall in (0, 1], got {top_n}, {recall}")
    probs = sorted((r.crystal_prob for r in rows), reverse=True)
    total = sum(probs)
    if recall is not None:
        running, top_n = 0.0, len(probs)
        for i, p in enumerate(probs, 1):
            running += p
            if running >= recall * total - 1e-12:
                top_n = i
                break
    top_n = min(top_n, len(probs))
    share = sum(probs[:top_n]) / total if total > 0 else float("nan")
    return ReviewBudget(top_n, share, total)


def write_plate_report(
    out_dir: str | os.PathLike,
    plate_key: str,
    plate_format: int | None,
    labels: PlateLabels,
    *,
    model_version: str,
    synthetic_model: bool,
    crystal_threshold: float,
    plate_meta: Mapping[str, Any] | None = None,
    conditions: Mapping[str, Mapping[str, Any]] | None = None,
    review_top_n: int | None = None,
    review_recall: float | None = None,
    timeline: Timeline | None = None,
    model_reason: str = "",
    second_opinion: SecondOpinion | None = None,
) -> PlateReport:
    """Write the report files and return them with the Markdown for the UI.

    ``plate_format`` None means the images are not wells of a plate (loose files):
    everything but the map is written. ``conditions`` maps canonical well names to
    condition columns (at least ``cocktail``); ``plate_meta`` may carry ``protein``.
    ``review_top_n`` or ``review_recall`` set the review budget (:func:`review_budget`; unset, the top
    :data:`DEFAULT_REVIEW_SHARE` of the plate): the hits inside it are the ones to review first,
    drawn apart on the map, listed first and marked in ``hits.csv``.
    ``timeline`` (the plate's inspections, :mod:`crystal_pipeline.plates.timeline`) puts the hits new
    since the previous inspection first, frames them on the map, and shows hits across inspections.
    ``model_reason``: why this model labelled the plate (one sentence, ``plates.model_choice``).
    ``second_opinion``: the visible model's labels of a UV plate the fused model labelled: the map
    and the review page can be coloured by either, and wells whose crystal call differs are marked
    (:mod:`crystal_pipeline.plates.second_opinion`).
    """
    if plate_format is not None and plate_format not in wells.PLATE_FORMATS:
        raise ValueError(f"unknown plate format {plate_format}: use one of {sorted(wells.PLATE_FORMATS)}")
    if not 0.0 <= crystal_threshold <= 1.0:
        raise ValueError(f"crystal_threshold must be within [0, 1], got {crystal_threshold}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plate_meta = dict(plate_meta or {})
    conditions = {k: dict(v) for k, v in (conditions or {}).items()}
    ranked = sorted(labels.rows, key=lambda r: (-r.crystal_prob, r.image_id))
    hits = [r for r in ranked if r.crystal_prob >= crystal_threshold]
    if review_top_n is None and review_recall is None:
        review_top_n = default_review_wells(len(labels.rows))
    budget = review_budget(labels.rows, top_n=review_top_n, recall=review_recall)
    review_first = hits[:budget.wells]  # hits are a prefix of ranked: the budget's wells that are hits
    missing = labels.missing_wells(plate_format)
    paths: dict[str, Path] = {}

    inspection = plate_key.partition("@")[2] or None
    new_hits = {h.slot for h in timeline.new_hits(inspection)} if timeline is not None else set()
    changed = opinion.changed_calls(ranked, crystal_threshold, second_opinion) if second_opinion else None
    map_png, second_png, map_html = None, None, ""
    if plate_format is not None:
        map_png = plate_map_png(plate_key, plate_format, labels, crystal_threshold, new_hits,
                                review_first={r.slot for r in review_first},
                                changed=None if changed is None else set(changed),
                                title=f"{plate_key}, {opinion.FUSED_TITLE}" if second_opinion else None)
        paths["map_png"] = atomic_write_bytes(out / "plate_map.png", map_png)
        map_html = "<h2>Plate map</h2>" + html.embedded_image(map_png, "plate map")
        if second_opinion is not None:
            second_png = opinion.visible_map_png(plate_key, plate_format, second_opinion, changed)
            paths["map_visible_png"] = atomic_write_bytes(out / "plate_map_visible.png", second_png)
            map_html = opinion.map_section(map_png, second_png, changed)
    paths["csv"] = atomic_write_bytes(out / "hits.csv", _hits_csv(ranked, crystal_threshold, len(review_first),
                                                                 plate_meta, conditions))
    paths["hits_meta"] = atomic_write_text(out / HITS_META, _hits_meta(labels, model_version, crystal_threshold,
                                                                     len(hits), model_reason, second_opinion, changed))
    paths["quarantined_csv"] = atomic_write_bytes(out / "quarantined.csv", _quarantine_csv(labels))
    summary = _summary(plate_key, plate_format, labels, missing, hits, model_version, crystal_threshold, plate_meta)
    if model_reason:
        summary["why this model"] = model_reason
    if second_opinion is not None:
        summary["second opinion"] = opinion.summary_line(second_opinion, changed)
    summary["review budget"] = budget.describe()
    summary["review first"] = (f"{len(review_first)} of {len(hits)} hits (the budget's wells that reach the "
                               f"threshold{'; large stars on the map' if map_png is not None else ''})")
    if timeline is not None and inspection in timeline.inspections:
        summary.update(timeline_report.summary_items(timeline, inspection))
    markdown = _markdown(plate_key, summary, map_png, ranked, hits, labels, synthetic_model, crystal_threshold,
                         plate_meta, conditions,
                         timeline_report.markdown_lines(timeline, inspection) if timeline is not None else [])
    paths["markdown"] = atomic_write_text(out / "report.md", markdown)
    page = _html(plate_key, summary, map_html, ranked, hits, labels, missing, synthetic_model, crystal_threshold,
                 plate_meta, conditions,
                 timeline_report.html_parts(timeline, inspection, _thumbnail) if timeline is not None else [],
                 second_opinion, changed)
    paths["html"] = atomic_write_text(out / "report.html", page)
    return PlateReport(paths=paths, markdown=markdown, map_png=map_png, hits=hits, review_first=review_first,
                       calls_differ=changed, map_visible_png=second_png)


# -- tables ------------------------------------------------------------------------
def _condition_columns(conditions: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols = dict.fromkeys(c for cond in conditions.values() for c in cond if c != "well")
    if "cocktail" in cols:  # the one a reader looks for first
        return ["cocktail", *[c for c in cols if c != "cocktail"]]
    return list(cols)


def _hits_csv(ranked: list[LabelledImage], threshold: float, n_review_first: int, plate_meta: Mapping[str, Any],
              conditions: Mapping[str, Mapping[str, Any]]) -> bytes:
    cond_cols = _condition_columns(conditions)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "image_id", "well", "drop", "class_id", "class_name", "marco_class", "crystal_prob", "hit",
                     "review_first", *[f"p_{n}" for n in CLASS_NAMES], "path", "protein", *cond_cols,
                     "crystal_x", "crystal_y"])
    protein = plate_meta.get("protein", "")
    for rank, r in enumerate(ranked, 1):
        cond = conditions.get(r.well, {})
        writer.writerow([rank, r.image_id, r.well, r.drop, r.class_id, r.class_name, r.marco_class, f"{r.crystal_prob:.6f}",
                         int(r.crystal_prob >= threshold), int(rank <= n_review_first),
                         *[f"{p:.6f}" for p in r.probs], str(r.path), protein,
                         *[cond.get(c, "") for c in cond_cols],
                         *((f"{r.crystal.x:.4f}", f"{r.crystal.y:.4f}") if r.crystal is not None else ("", ""))])
    return buffer.getvalue().encode()


def _hits_meta(labels: PlateLabels, model_version: str, threshold: float, hits: int, reason: str = "",
               second: SecondOpinion | None = None, changed: list[str] | None = None) -> str:
    """``hits.meta.json``: what produced hits.csv (and why that model), and the second opinion's
    model and the wells whose call it makes differently, for a reader who has only the CSV's folder."""
    t = labels.timings
    other = None if second is None else opinion.meta(second, changed)
    return json.dumps({"model_version": model_version, "crystal_threshold": threshold, "labelled": len(labels.rows),
                       "hits": hits, "engine": t.engine, "precision": t.precision,
                       "precision_reason": t.precision_reason, "model_reason": reason,
                       "second_opinion": other}, indent=1) + "\n"


def _quarantine_csv(labels: PlateLabels) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "well", "drop", "reason", "path"])
    for q in labels.quarantined:
        writer.writerow([q.image_id, q.well, q.drop, q.reason, str(q.path)])
    return buffer.getvalue().encode()


def _summary(plate_key, plate_format, labels, missing, hits, model_version, threshold, plate_meta) -> dict[str, Any]:
    counts = Counter(r.class_id for r in labels.rows)
    out: dict[str, Any] = {"plate": plate_key}
    if plate_meta.get("protein"):
        out["protein"] = plate_meta["protein"]
    if plate_meta.get("screen"):
        out["screen"] = plate_meta["screen"]
    out.update({
        "plate format": f"{plate_format} wells" if plate_format else "loose images (no well names)",
        "files": labels.files,
        "labelled": len(labels.rows),
        "quarantined": len(labels.quarantined),
    })
    if plate_format:
        out["missing wells"] = len(missing)
    if labels.drops > 1:
        out["drops per well"] = labels.drops
    out.update({
        "crystal hits": f"{len(hits)} (crystal_prob >= {threshold:.3f})",
        "model": model_version,
        "images/s": f"{labels.timings.images_per_s:.1f} ({labels.timings.path}, {labels.timings.total_s:.1f} s)",
        "engine": f"{labels.timings.engine}, {labels.timings.precision}",
        "classes": ", ".join(f"{CLASS_NAMES[c - 1]} {n}" for c, n in sorted(counts.items())) or "-",
        "MARCO classes": marco_counts(labels.rows),
    })
    return out


def marco_counts(rows: list[LabelledImage]) -> str:
    """Wells per MARCO outcome, in MARCO's order ("crystals 3, precipitate 40, clear 50, other 3")."""
    counts = Counter(r.marco_class for r in rows)
    return ", ".join(f"{name} {counts[name]}" for name in MARCO_CLASSES) if rows else "-"


def _hit_table_rows(rows: list[LabelledImage], plate_meta, conditions) -> tuple[list[str], list[list[str]]]:
    header = ["#", "well", "class", "MARCO", "crystal p"]
    has_cocktail = any("cocktail" in c for c in conditions.values())
    if plate_meta.get("protein"):
        header.append("protein")
    if has_cocktail:
        header.append("cocktail")
    body = []
    for i, r in enumerate(rows, 1):
        line = [str(i), r.slot, CLASS_TITLES[r.class_id - 1], r.marco_class, f"{r.crystal_prob:.3f}"]
        if plate_meta.get("protein"):
            line.append(str(plate_meta["protein"]))
        if has_cocktail:
            line.append(str(conditions.get(r.well, {}).get("cocktail", "")))
        body.append(line)
    return header, body


def _markdown(plate_key, summary, map_png, ranked, hits, labels, synthetic_model, threshold, plate_meta,
              conditions, first: list[str]) -> str:
    lines = [f"# Plate {plate_key}", ""]
    if synthetic_model:
        lines += [f"> **Warning:** {SYNTHETIC_BANNER}", ""]
    lines += [md.key_value_table(summary.items()), ""]
    if map_png is not None:
        lines += [md.image(map_png, "plate map"), ""]
    lines += first
    top = hits[:TOP_MARKDOWN_ROWS] if hits else ranked[:TOP_MARKDOWN_ROWS]
    title = (f"Top {len(top)} of {len(hits)} hits" if hits
             else f"No well reaches crystal p >= {threshold:.3f}; highest crystal probabilities")
    lines += [f"## {title}", ""]
    lines.append(md.table(*_hit_table_rows(top, plate_meta, conditions)))
    if labels.quarantined:
        lines += ["", f"## Quarantined ({len(labels.quarantined)})", ""]
        lines += [f"- `{q.image_id}`: {md.cell(q.reason)}" for q in labels.quarantined[:20]]
        if len(labels.quarantined) > 20:
            lines.append(f"- ... and {len(labels.quarantined) - 20} more (quarantined.csv)")
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}"
    "img[alt='plate map']{max-width:100%;height:auto}"  # the whole map and its legend in any window
    ".banner{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em;margin:.5em 0;font-weight:bold}"
    ".thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0;width:"
    f"{THUMBNAIL_PX}px;font-size:12px}}.thumbs img{{width:{THUMBNAIL_PX}px;height:{THUMBNAIL_PX}px;"
    "object-fit:contain;background:#000}"
)


def _html(plate_key, summary, map_html, ranked, hits, labels, missing, synthetic_model, threshold, plate_meta,
          conditions, first: list[str], second: SecondOpinion | None = None, changed=None) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Plate {escape(plate_key)}</title><style>",
        _CSS,
        "</style></head><body>",
        f"<h1>Plate {escape(plate_key)}</h1>",
    ]
    if synthetic_model:
        parts.append(f"<div class='banner'>{escape(SYNTHETIC_BANNER)}</div>")
    parts.append("<table>" + "".join(html.row(item, row_header=True) for item in summary.items()) + "</table>")
    parts.append(map_html)
    parts += first
    thumbnail = heatmap.thumbnails_with_heat(hits, _thumbnail, THUMBNAIL_PX)  # hits: their crystal map over them
    parts += _html_thumbnails(ranked, hits, threshold, conditions, thumbnail)
    parts += _html_ranking(ranked, hits, plate_meta, conditions)
    parts += _html_quarantine(labels)
    if missing:
        parts.append(f"<h2>Missing wells ({len(missing)})</h2><p>{escape(', '.join(missing))}</p>")
    parts.append(review_section(plate_key, ranked, threshold, thumbnail,  # the page is also a review page
                                second=second, changed=changed))
    if second is not None:
        parts.append(opinion.page_assets())  # the "Colour by" selectors, after every one of them
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_thumbnails(ranked, hits, threshold, conditions, thumbnail=None) -> list[str]:
    """The top hits (or, with none, the highest crystal probabilities) as captioned photographs."""
    thumbnail = thumbnail or _thumbnail
    top = hits[:TOP_THUMBNAILS] if hits else ranked[:TOP_THUMBNAILS]
    heading = (f"Top {len(top)} of {len(hits)} hits" if hits
               else f"No well reaches crystal p &ge; {threshold:.3f}: the {len(top)} highest crystal probabilities")
    parts = [f"<h2>{heading}</h2>"]
    if any(r.crystal is not None for r in top):
        parts.append("<p>Warm overlay: where the model sees the crystal (its crystal map); cross: the map's peak "
                     "(crystal_x, crystal_y in hits.csv).</p>")
    parts.append("<div class='thumbs'>")
    for r in top:
        thumb = thumbnail(r.path)
        img = (html.embedded_image(thumb, r.image_id, "image/jpeg") if thumb
               else "<div style='height:160px;background:#eee'>no preview</div>")
        img += uv_thumbnail_html(r.path, r.image_id, _thumbnail)  # the drop's UV picture, where it has one
        cocktail = conditions.get(r.well, {}).get("cocktail")
        caption = f"<b>{escape(r.slot)}</b> p={r.crystal_prob:.3f}<br>{escape(CLASS_TITLES[r.class_id - 1])}"
        if cocktail:
            caption += f"<br>{escape(cocktail)}"
        parts.append(f"<figure data-well='{escape(r.slot)}'>{img}<figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    return parts


def _html_ranking(ranked, hits, plate_meta, conditions) -> list[str]:
    """Every hit, and at least the first 50 wells, by crystal probability (the CSV has all)."""
    header, body = _hit_table_rows(ranked[: max(len(hits), 50)], plate_meta, conditions)
    parts = [f"<h2>Ranked by crystal probability (first {len(body)}; all in hits.csv)</h2><table>"
             + html.row(header, "th")]
    parts += [html.row(row) for row in body]
    parts.append("</table>")
    return parts


def _html_quarantine(labels: PlateLabels) -> list[str]:
    parts = [f"<h2>Quarantined ({len(labels.quarantined)})</h2>"]
    if not labels.quarantined:
        return parts + ["<p>None.</p>"]
    parts.append("<table>" + html.row(["image", "well", "reason", "path"], "th"))
    parts += [html.row([q.image_id, q.well, q.reason, q.path]) for q in labels.quarantined]
    parts.append("</table>")
    return parts


def _thumbnail(path: Path) -> bytes | None:
    """A JPEG of the photograph as taken (colour kept), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format in ("JPEG", "MPO"):
                im.draft("RGB", (THUMBNAIL_PX * 2, THUMBNAIL_PX * 2))
            im = im.convert("RGB")
            im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=85)
    except Exception:  # a preview must never cost the report
        return None
    return buffer.getvalue()
