"""A labelled plate as a crystallographer reads it: map, ranked hit list, thumbnails.

Files written into ``out_dir`` (each atomically: temp file + ``os.replace``, so a
reader, e.g. the Dagster UI or a browser refreshing, never sees half a file):

- ``plate_map.png``: the plate's grid, each well coloured by predicted class, a
  black dot sized by crystal probability, a star on hits, quarantined wells hatched
  with a ``Q``, missing wells left pale grey (no map for loose images whose names
  are not wells);
- ``hits.csv``: every labelled image ranked by crystal probability (highest first)
  with a ``hit`` column, all 10 probabilities, the image path and, when known, the
  protein and the well's cocktail (a hit without its condition is not actionable);
- ``quarantined.csv``: what could not be labelled, and why;
- ``report.html``: self-contained (images embedded as base64): banner, summary,
  map, thumbnails of the top hits, hit table, quarantine list;
- ``report.md``: the same summary for the Dagster UI, the map embedded.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crystal_pipeline import wells
from crystal_pipeline.classes import CLASS_NAMES, CLASS_TITLES
from crystal_pipeline.plates.labelling import LabelledImage, PlateLabels

#: Thumbnails in the HTML page; more hits are in the CSV.
TOP_THUMBNAILS = 24
#: Hit rows in the Markdown (the Dagster UI truncates long metadata anyway).
TOP_MARKDOWN_ROWS = 10
THUMBNAIL_PX = 160
# tab10, in class order: distinct for 10 classes and readable for most colour vision.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MISSING_COLOUR = "#f0f0f0"
QUARANTINE_COLOUR = "#555555"
SYNTHETIC_BANNER = ("This plate was labelled by a model trained on synthetic images. Its labels show that the "
                    "pipeline runs; they are not evidence about real crystals.")


@dataclass(frozen=True)
class PlateReport:
    paths: dict[str, Path]
    markdown: str
    map_png: bytes | None
    hits: list[LabelledImage]


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
) -> PlateReport:
    """Write the report files and return them with the Markdown for the UI.

    ``plate_format`` None means the images are not wells of a plate (loose files):
    everything but the map is written. ``conditions`` maps canonical well names to
    condition columns (at least ``cocktail``); ``plate_meta`` may carry ``protein``.
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
    missing = _missing(labels, plate_format)
    paths: dict[str, Path] = {}

    map_png = None
    if plate_format is not None:
        map_png = plate_map_png(plate_key, plate_format, labels, crystal_threshold)
        paths["map_png"] = _write(out / "plate_map.png", map_png)
    paths["csv"] = _write(out / "hits.csv", _hits_csv(ranked, crystal_threshold, plate_meta, conditions))
    paths["quarantined_csv"] = _write(out / "quarantined.csv", _quarantine_csv(labels))
    summary = _summary(plate_key, plate_format, labels, missing, hits, model_version, crystal_threshold, plate_meta)
    markdown = _markdown(plate_key, summary, map_png, ranked, hits, labels, synthetic_model, crystal_threshold,
                         plate_meta, conditions)
    paths["markdown"] = _write(out / "report.md", markdown.encode())
    page = _html(plate_key, summary, map_png, ranked, hits, labels, missing, synthetic_model, crystal_threshold,
                 plate_meta, conditions)
    paths["html"] = _write(out / "report.html", page.encode())
    return PlateReport(paths=paths, markdown=markdown, map_png=map_png, hits=hits)


# -- the map -----------------------------------------------------------------------
def plate_map_png(plate_key: str, plate_format: int, labels: PlateLabels, crystal_threshold: float) -> bytes:
    """The plate grid as PNG bytes (see the module docstring for the encoding)."""
    from crystal_pipeline.reporting.figures import _plt

    plt = _plt()
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    n_rows, n_cols = wells.PLATE_FORMATS[plate_format]
    grid = np.empty((n_rows, n_cols, 3))
    grid[:] = to_rgb(MISSING_COLOUR)
    dots: list[tuple[int, int, float]] = []
    stars: list[tuple[int, int]] = []
    counts: Counter[int] = Counter()
    for r in labels.rows:
        pos = _grid_pos(r.well, plate_format)
        if pos is None:
            continue
        row, col = pos
        grid[row, col] = to_rgb(CLASS_COLOURS[r.class_id - 1])
        counts[r.class_id] += 1
        dots.append((row, col, r.crystal_prob))
        if r.crystal_prob >= crystal_threshold:
            stars.append((row, col))
    q_cells = {pos for q in labels.quarantined if (pos := _grid_pos(q.well, plate_format)) is not None}
    for row, col in q_cells:
        grid[row, col] = to_rgb(QUARANTINE_COLOUR)

    cell = {96: 0.55, 384: 0.36, 1536: 0.26}[plate_format]
    fig, ax = plt.subplots(figsize=(n_cols * cell + 3.2, n_rows * cell + 1.2))
    ax.imshow(grid, interpolation="nearest", aspect="equal")
    scale = (cell * 72 * 0.8) ** 2  # marker area (points^2) of a dot filling ~80% of a cell
    if dots:
        d = np.array(dots)
        ax.scatter(d[:, 1], d[:, 0], s=np.clip(d[:, 2], 0, 1) * scale * 0.6, c="black", linewidths=0)
    if stars:
        s = np.array(stars)
        ax.scatter(s[:, 1], s[:, 0], s=scale * 0.9, marker="*", c="white", edgecolors="black", linewidths=0.6)
    font = {96: 9, 384: 7, 1536: 5}[plate_format]
    for row, col in q_cells:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, hatch="////", edgecolor="white",
                               linewidth=0))
        ax.text(col, row, "Q", ha="center", va="center", color="white", fontsize=font, fontweight="bold")
    ax.set_xticks(range(n_cols), [str(c) for c in range(1, n_cols + 1)], fontsize=font)
    ax.set_yticks(range(n_rows), [wells.row_letters(r) for r in range(1, n_rows + 1)], fontsize=font)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(-0.5, n_cols), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    n_missing = len(_missing(labels, plate_format))
    ax.set_title(f"{plate_key}: {len(labels.rows)} labelled, {len(labels.quarantined)} quarantined, "
                 f"{n_missing} missing, {len(stars)} hits (crystal p >= {crystal_threshold:.2f})", fontsize=10)
    handles = [Patch(color=CLASS_COLOURS[i], label=f"{CLASS_TITLES[i]} ({counts.get(i + 1, 0)})") for i in range(10)]
    handles += [
        Patch(facecolor=QUARANTINE_COLOUR, hatch="////", edgecolor="white", label=f"quarantined ({len(q_cells)})"),
        Patch(facecolor=MISSING_COLOUR, edgecolor="#999999", label=f"missing ({n_missing})"),
        Line2D([], [], marker="o", color="black", linestyle="", markersize=5, label="dot size = crystal p"),
        Line2D([], [], marker="*", color="white", markeredgecolor="black", linestyle="", markersize=10,
               label=f"hit: crystal p >= {crystal_threshold:.2f}"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    from crystal_pipeline.reporting.figures import _png

    return _png(fig)


def _grid_pos(well: str, plate_format: int) -> tuple[int, int] | None:
    try:
        w = wells.parse_well(well, plate_format)
    except wells.InvalidWell:
        return None
    return w.row - 1, w.col - 1


def _missing(labels: PlateLabels, plate_format: int | None) -> list[str]:
    if plate_format is None:
        return []
    return wells.missing_wells([r.well for r in labels.rows] + [q.well for q in labels.quarantined], plate_format)


# -- tables ------------------------------------------------------------------------
def _condition_columns(conditions: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols = dict.fromkeys(c for cond in conditions.values() for c in cond if c != "well")
    if "cocktail" in cols:  # the one a reader looks for first
        return ["cocktail", *[c for c in cols if c != "cocktail"]]
    return list(cols)


def _hits_csv(ranked: list[LabelledImage], threshold: float, plate_meta: Mapping[str, Any],
              conditions: Mapping[str, Mapping[str, Any]]) -> bytes:
    cond_cols = _condition_columns(conditions)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "image_id", "well", "class_id", "class_name", "crystal_prob", "hit",
                     *[f"p_{n}" for n in CLASS_NAMES], "path", "protein", *cond_cols])
    protein = plate_meta.get("protein", "")
    for rank, r in enumerate(ranked, 1):
        cond = conditions.get(r.well, {})
        writer.writerow([rank, r.image_id, r.well, r.class_id, r.class_name, f"{r.crystal_prob:.6f}",
                         int(r.crystal_prob >= threshold), *[f"{p:.6f}" for p in r.probs], str(r.path), protein,
                         *[cond.get(c, "") for c in cond_cols]])
    return buffer.getvalue().encode()


def _quarantine_csv(labels: PlateLabels) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "well", "reason", "path"])
    for q in labels.quarantined:
        writer.writerow([q.image_id, q.well, q.reason, str(q.path)])
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
    out.update({
        "crystal hits": f"{len(hits)} (crystal_prob >= {threshold:.3f})",
        "model": model_version,
        "images/s": f"{labels.timings.images_per_s:.1f} ({labels.timings.path}, {labels.timings.total_s:.1f} s)",
        "classes": ", ".join(f"{CLASS_NAMES[c - 1]} {n}" for c, n in sorted(counts.items())) or "-",
    })
    return out


def _hit_table_rows(rows: list[LabelledImage], plate_meta, conditions) -> tuple[list[str], list[list[str]]]:
    header = ["#", "well", "class", "crystal p"]
    has_cocktail = any("cocktail" in c for c in conditions.values())
    if plate_meta.get("protein"):
        header.append("protein")
    if has_cocktail:
        header.append("cocktail")
    body = []
    for i, r in enumerate(rows, 1):
        line = [str(i), r.well, CLASS_TITLES[r.class_id - 1], f"{r.crystal_prob:.3f}"]
        if plate_meta.get("protein"):
            line.append(str(plate_meta["protein"]))
        if has_cocktail:
            line.append(str(conditions.get(r.well, {}).get("cocktail", "")))
        body.append(line)
    return header, body


def _markdown(plate_key, summary, map_png, ranked, hits, labels, synthetic_model, threshold, plate_meta,
              conditions) -> str:
    lines = [f"# Plate {plate_key}", ""]
    if synthetic_model:
        lines += [f"> **Warning:** {SYNTHETIC_BANNER}", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {_md(v)} |" for k, v in summary.items()]
    lines.append("")
    if map_png is not None:
        lines += [f"![plate map](data:image/png;base64,{base64.b64encode(map_png).decode()})", ""]
    top = hits[:TOP_MARKDOWN_ROWS] if hits else ranked[:TOP_MARKDOWN_ROWS]
    title = (f"Top {len(top)} of {len(hits)} hits" if hits
             else f"No well reaches crystal p >= {threshold:.3f}; highest crystal probabilities")
    lines += [f"## {title}", ""]
    header, body = _hit_table_rows(top, plate_meta, conditions)
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    if labels.quarantined:
        lines += ["", f"## Quarantined ({len(labels.quarantined)})", ""]
        lines += [f"- `{q.image_id}`: {_md(q.reason)}" for q in labels.quarantined[:20]]
        if len(labels.quarantined) > 20:
            lines.append(f"- ... and {len(labels.quarantined) - 20} more (quarantined.csv)")
    return "\n".join(lines) + "\n"


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _html(plate_key, summary, map_png, ranked, hits, labels, missing, synthetic_model, threshold, plate_meta,
          conditions) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Plate {esc(plate_key)}</title><style>",
        "body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}"
        ".banner{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em;margin:.5em 0;font-weight:bold}"
        ".thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0;width:"
        f"{THUMBNAIL_PX}px;font-size:12px}}.thumbs img{{width:{THUMBNAIL_PX}px;height:{THUMBNAIL_PX}px;"
        "object-fit:contain;background:#000}",
        "</style></head><body>",
        f"<h1>Plate {esc(plate_key)}</h1>",
    ]
    if synthetic_model:
        parts.append(f"<div class='banner'>{esc(SYNTHETIC_BANNER)}</div>")
    parts.append("<table>" + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                                     for k, v in summary.items()) + "</table>")
    if map_png is not None:
        parts.append(f"<h2>Plate map</h2><img alt='plate map' src='data:image/png;base64,"
                     f"{base64.b64encode(map_png).decode()}'>")
    top = hits[:TOP_THUMBNAILS] if hits else ranked[:TOP_THUMBNAILS]
    heading = (f"Top {len(top)} of {len(hits)} hits" if hits
               else f"No well reaches crystal p &ge; {threshold:.3f}: the {len(top)} highest crystal probabilities")
    parts.append(f"<h2>{heading}</h2><div class='thumbs'>")
    for r in top:
        thumb = _thumbnail(r.path)
        img = (f"<img alt='{esc(r.image_id)}' src='data:image/jpeg;base64,{thumb}'>" if thumb
               else "<div style='height:160px;background:#eee'>no preview</div>")
        cocktail = conditions.get(r.well, {}).get("cocktail")
        caption = f"<b>{esc(r.well)}</b> p={r.crystal_prob:.3f}<br>{esc(CLASS_TITLES[r.class_id - 1])}"
        if cocktail:
            caption += f"<br>{esc(str(cocktail))}"
        parts.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    header, body = _hit_table_rows(ranked[: max(len(hits), 50)], plate_meta, conditions)
    parts.append(f"<h2>Ranked by crystal probability (first {len(body)}; all in hits.csv)</h2><table><tr>"
                 + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in body:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    parts.append(f"<h2>Quarantined ({len(labels.quarantined)})</h2>")
    if labels.quarantined:
        parts.append("<table><tr><th>image</th><th>well</th><th>reason</th><th>path</th></tr>")
        parts += [f"<tr><td>{esc(q.image_id)}</td><td>{esc(q.well)}</td><td>{esc(q.reason)}</td>"
                  f"<td>{esc(str(q.path))}</td></tr>" for q in labels.quarantined]
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if missing:
        parts.append(f"<h2>Missing wells ({len(missing)})</h2><p>{esc(', '.join(missing))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _thumbnail(path: Path) -> str | None:
    """A base64 JPEG of the photograph as taken (colour kept), or None if unreadable."""
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
    return base64.b64encode(buffer.getvalue()).decode()


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
