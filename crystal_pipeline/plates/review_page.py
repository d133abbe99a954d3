"""The plate report as a review page: a crystallographer corrects the model in the browser.

The section this module writes goes at the end of ``report.html`` and works from
``file://`` with no server and no network: its data is a JSON block inside the page,
its script and style sheet are the constants below, its thumbnails are data URIs.

What a reviewer does there:

- picks a well: a click on any thumbnail (the top hits above, or the review queue),
  the well box (any labelled well of the plate), or ``n``/``p`` (also the arrow keys)
  to walk the queue;
- sets its outcome with the seven attribute buttons or the keys ``1``..``7``
  (``0`` clears the well); ``clear`` excludes the other six, as in the archive;
- types a name and presses Export: a CSV in the raw archive's annotation format
  (``plate_id, well, drop, inspection, annotator, attributes`` with annotator
  ``review:<name>`` and ``;``-separated attributes) is downloaded and shown in a
  text box. Dropped into ``<raw_dir>/annotations/`` it is read like any annotation
  file, and a review overrides the original annotators in consensus.

The review queue holds the wells the model is least sure of: the calibrated
``crystal_prob`` nearest the plate's crystal threshold (the decision a reviewer's
answer changes), ties broken by higher entropy of the 10-class distribution.
A second order, chosen on the page, puts first the wells whose label teaches the model
most (:mod:`crystal_pipeline.plates.review_order`: the expected value of a correction,
spread across classes and the plate); ``n``/``p`` walk whichever queue is shown.
Marks survive a reload (the browser's localStorage, per plate), never leave the
machine, and are never written into the report file itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from crystal_pipeline.classes import ATTRIBUTES, CLASS_TITLES
from crystal_pipeline.ingest.archive import split_plate_key
from crystal_pipeline.ingest.reviews import REVIEW_PREFIX
from crystal_pipeline.plates.labelling import LabelledImage
from crystal_pipeline.plates.review_order import CLASS_DISCOUNT, NEIGHBOUR_DISCOUNT, ORDER_RULE, teaching_order
from crystal_pipeline.plates.second_opinion import CHANGED_RULE, VISIBLE_TITLE, SecondOpinion, colouring_select
from crystal_pipeline.plates.uv_thumbnail import uv_thumbnail_html
from crystal_pipeline.reporting.embed import data_uri
from crystal_pipeline.reporting.html import escape, script_json

#: Wells in the review queue (the page's well box reaches every other well).
QUEUE_SIZE = 24
QUEUE_RULE = ("crystal_prob nearest the crystal threshold ({threshold:.3f}), ties broken by the higher entropy "
              "of the 10 class probabilities")


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats of one image's class probabilities (0 = certain, ln 10 = uniform)."""
    return float(-sum(p * math.log(p) for p in probs if p > 0))


def review_queue(rows: Sequence[LabelledImage], threshold: float, size: int = QUEUE_SIZE) -> list[LabelledImage]:
    """The ``size`` wells the model is least sure of, most doubtful first (:data:`QUEUE_RULE`)."""
    return sorted(rows, key=lambda r: (abs(r.crystal_prob - threshold), -entropy(r.probs), r.image_id))[:size]


def _row_letters(well: str) -> int:
    """How many letters start a well name: row ``AA`` comes after row ``Z`` (1536 plates)."""
    return len(well) - len(well.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def review_section(plate_key: str, rows: Sequence[LabelledImage], threshold: float,
                   thumbnail: Callable[[Path], bytes | None], queue_size: int = QUEUE_SIZE, *,
                   second: SecondOpinion | None = None, changed: Sequence[str] | None = None) -> str:
    """The review page's HTML (controls, queue, data, script) for the end of the report's body.
    With a ``second`` opinion (the visible model's labels of a UV plate), a "Colour by" selector
    switches each well's shown call between the two models, the wells in ``changed`` are marked,
    and a third queue order lists them."""
    plate_id, inspection = split_plate_key(plate_key)
    queue = review_queue(rows, threshold, queue_size)
    teaches = teaching_order(rows, threshold)[:queue_size]
    by_position = sorted(rows, key=lambda r: (_row_letters(r.well), r.well, r.drop, r.image_id))
    other = second.by_slot() if second is not None else {}
    changed_set = set(changed or ())
    changed_rows = [r for r in rows if r.slot in changed_set][:queue_size]
    data = {
        "plate_key": plate_key, "plate_id": plate_id, "inspection": inspection or "",
        "attributes": list(ATTRIBUTES), "prefix": REVIEW_PREFIX, "queue": [r.slot for r in queue],
        "queues": {"probability": [r.slot for r in queue], "teaches": [r.slot for r in teaches],
                   **({"changed": [r.slot for r in changed_rows]} if second is not None else {})},
        # keyed by slot (A01, A01_2): two drops of one well are reviewed apart
        "wells": {r.slot: {"well": r.well, "drop": r.drop, "cls": CLASS_TITLES[r.class_id - 1],
                           "p": round(r.crystal_prob, 4), "h": round(entropy(r.probs), 3), "order": i,
                           **_second_call(other.get(r.slot), r.slot in changed_set)}
                  for i, r in enumerate(by_position)},
    }
    payload = script_json(data)  # no value closes the script element or opens a comment
    buttons = "".join(f"<button type='button' class='attr' data-attr='{a}' title='key {i}'>"
                      f"<kbd>{i}</kbd> {escape(a)}</button>" for i, a in enumerate(ATTRIBUTES, 1))
    options = "".join(f"<option value='{escape(r.slot)}'>" for r in by_position)
    thumbs: dict[Path, bytes | None] = {}

    def cards(wells: Sequence[LabelledImage]) -> str:
        out = []
        for r in wells:
            thumb = thumbs[r.path] if r.path in thumbs else thumbs.setdefault(r.path, thumbnail(r.path))
            img = (f"<img alt='{escape(r.image_id)}' src='{data_uri(thumb, 'image/jpeg')}'>" if thumb
                   else "<div class='nopreview'>no preview</div>")
            img += uv_thumbnail_html(r.path, r.image_id, thumbnail)  # the drop's UV picture, where it has one
            call = f"p={r.crystal_prob:.3f} H={entropy(r.probs):.2f}<br>{escape(CLASS_TITLES[r.class_id - 1])}"
            if second is not None:
                call = _both_calls(call, other.get(r.slot), r.slot in changed_set)
            out.append(f"<figure data-well='{escape(r.slot)}'>{img}<figcaption><b>{escape(r.slot)}</b> "
                       f"{call}</figcaption></figure>")
        return "".join(out)

    teach_rule = ORDER_RULE.format(cls=CLASS_DISCOUNT, near=NEIGHBOUR_DISCOUNT)
    return "\n".join([
        f"<style>{_CSS}</style>",
        "<section id='review'><h2>Review</h2>",
        "<p>Pick a well (click a thumbnail, type it in the well box, or <kbd>n</kbd>/<kbd>p</kbd> through the "
        "queue), set what you see with the buttons or keys <kbd>1</kbd>-<kbd>7</kbd> (<kbd>0</kbd> clears), "
        "then export. Put the exported CSV into <code>&lt;raw_dir&gt;/annotations/</code>: your labels "
        "replace the annotators' in the next consensus (docs/review_loop.md).</p>",
        "<div class='bar'><label>Reviewer <input id='reviewer' placeholder='your name' autocomplete='off'>"
        "</label> <label>Well <input id='well-input' list='well-list' size='6' autocomplete='off'></label>"
        f"<datalist id='well-list'>{options}</datalist> "
        "<button type='button' id='export'>Export corrections CSV</button> "
        "<span id='review-status'>0 wells reviewed</span></div>",
        "<div id='current'><span id='current-well'>No well selected.</span> "
        f"<span class='attrs'>{buttons}</span></div>",
        f"<h3>Review queue: the {len(queue)} wells the model is least sure of</h3>",
        "<p><label>Order <select id='queue-order'><option value='probability'>by crystal probability</option>"
        "<option value='teaches'>by what a label teaches</option>"
        + ("<option value='changed'>where UV changed the call</option>" if second is not None else "")
        + "</select></label>" + (f" {colouring_select()}" if second is not None else "") + "</p>",
        f"<div id='queue-probability'><p class='rule'>Order: {escape(QUEUE_RULE.format(threshold=threshold))}.</p>",
        f"<div class='thumbs' id='queue'>{cards(queue)}</div></div>",
        f"<div id='queue-teaches' hidden><p class='rule'>Order: {escape(teach_rule)}.</p>",
        f"<div class='thumbs'>{cards(teaches)}</div></div>",
        *([f"<div id='queue-changed' hidden><p class='rule'>Wells where {escape(CHANGED_RULE)} "
           f"({len(changed_set)}; the first {len(changed_rows)}).</p>",
           f"<div class='thumbs'>{cards(changed_rows)}</div></div>"] if second is not None else []),
        "<h3>Corrections CSV</h3><textarea id='csv-out' rows='8' cols='90' readonly></textarea>",
        "</section>",
        f"<script type='application/json' id='review-data'>{payload}</script>",
        f"<script>{_SCRIPT}</script>",
    ])


def _second_call(row: LabelledImage | None, changed: bool) -> dict:
    """The visible model's call on a well, for the page's data (empty without one)."""
    if row is None:
        return {}
    return {"second": {"cls": CLASS_TITLES[row.class_id - 1], "p": round(row.crystal_prob, 4)}, "changed": changed}


def _both_calls(call: str, row: LabelledImage | None, changed: bool) -> str:
    """A card's caption with the fused call and, switched by "Colour by", the visible model's."""
    second = (f"p={row.crystal_prob:.3f}<br>{escape(CLASS_TITLES[row.class_id - 1])}" if row is not None
              else "not labelled")
    mark = " <span class='changed' title='the crystal call differs'>UV changed the call</span>" if changed else ""
    return (f"<span class='by-fused'>{call}</span><span class='by-visible'>{escape(VISIBLE_TITLE)}: {second}"
            f"</span>{mark}")


_CSS = (
    "#review .bar{margin:.5em 0}#review input{font-size:14px;padding:2px 4px}"
    "#current{position:sticky;top:0;background:#f4f7fb;border:1px solid #9ab;padding:.4em .8em;z-index:2}"
    "#current .attr{margin:2px;padding:3px 8px;border:1px solid #888;border-radius:4px;background:#fff}"
    "#current .attr.on{background:#2a6;color:#fff;border-color:#2a6}"
    "figure[data-well]{cursor:pointer;outline-offset:2px}figure.selected{outline:3px solid #36c}"
    "figure.reviewed figcaption .marks{color:#2a6;font-weight:bold}"
    ".nopreview{height:160px;background:#eee}.rule{font-size:12px;color:#555}kbd{border:1px solid #aaa;"
    "border-radius:3px;padding:0 3px;font-size:11px;background:#fafafa}"
)

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const ATTRS = data.attributes;
  const store = "crystal-review:" + data.plate_key;
  const marks = new Map();
  let current = null;
  const $ = (id) => document.getElementById(id);
  const reviewer = $("reviewer"), wellInput = $("well-input"), status = $("review-status");

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(store) || "{}");
      for (const [well, attrs] of Object.entries(saved.marks || {})) {
        if (data.wells[well]) marks.set(well, new Set(attrs));
      }
      reviewer.value = saved.reviewer || "";
    } catch (e) { /* a page opened where storage is off still works, without memory */ }
  }
  function save() {
    const obj = {};
    marks.forEach((s, w) => { obj[w] = Array.from(s); });
    try { localStorage.setItem(store, JSON.stringify({marks: obj, reviewer: reviewer.value})); } catch (e) {}
  }
  function attrsOf(well) {
    const s = marks.get(well);
    return s ? ATTRS.filter((a) => s.has(a)) : [];
  }
  function render() {
    document.querySelectorAll("figure[data-well]").forEach((fig) => {
      const well = fig.dataset.well;
      fig.classList.toggle("selected", well === current);
      fig.classList.toggle("reviewed", marks.has(well));
      let span = fig.querySelector(".marks");
      if (!span) {
        span = document.createElement("div");
        span.className = "marks";
        fig.querySelector("figcaption").appendChild(span);
      }
      span.textContent = marks.has(well) ? "review: " + attrsOf(well).join(";") : "";
    });
    const info = current && data.wells[current];
    const visible = info && info.second && document.body.dataset.colouring === "visible";
    const call = visible ? info.second : info;  // "Colour by": the visible model's call on a UV plate
    $("current-well").textContent = info
      ? current + ": " + (visible ? "the visible model" : "model") + " says " + call.cls + ", crystal p=" +
        call.p + (visible ? "" : ", H=" + info.h) + (info.changed ? " (UV changed the crystal call)" : "") +
        (marks.has(current) ? "; your review: " + attrsOf(current).join(";") : "; not reviewed")
      : "No well selected.";
    document.querySelectorAll("#current .attr").forEach((b) => {
      b.classList.toggle("on", !!(current && marks.has(current) && marks.get(current).has(b.dataset.attr)));
    });
    status.textContent = marks.size + (marks.size === 1 ? " well" : " wells") + " reviewed";
  }
  function select(well) {
    if (!data.wells[well]) { status.textContent = "no labelled well " + well; return; }
    current = well;
    wellInput.value = well;
    render();
  }
  function toggle(attr) {
    if (!current) { status.textContent = "select a well first"; return; }
    let s = new Set(marks.get(current) || []);
    if (s.has(attr)) s.delete(attr);
    else if (attr === "clear") s = new Set(["clear"]);  // clear = none of the other six
    else { s.delete("clear"); s.add(attr); }
    if (s.size) marks.set(current, s); else marks.delete(current);
    save();
    render();
  }
  function step(delta) {
    const q = data.queue;
    if (!q.length) return;
    const i = q.indexOf(current);
    select(q[i < 0 ? (delta > 0 ? 0 : q.length - 1) : (i + delta + q.length) % q.length]);
  }
  function field(value) {
    const v = String(value);
    return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  function csvText(name) {
    const wells = Array.from(marks.keys()).sort((a, b) => data.wells[a].order - data.wells[b].order);
    const lines = ["plate_id,well,drop,inspection,annotator,attributes"];
    for (const w of wells) {
      const info = data.wells[w];
      lines.push([data.plate_id, info.well, info.drop, data.inspection, data.prefix + name,
                  attrsOf(w).join(";")].map(field).join(","));
    }
    return lines.join("\n") + "\n";
  }
  function exportCsv() {
    const name = reviewer.value.trim();
    if (!name) { status.textContent = "type your name before exporting"; reviewer.focus(); return; }
    if (!marks.size) { status.textContent = "nothing reviewed yet"; return; }
    const text = csvText(name);
    $("csv-out").value = text;
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
    const safe = (s) => s.replace(/[^A-Za-z0-9_.-]+/g, "_");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
    link.download = "review_" + safe(data.plate_key) + "_" + safe(name) + "_" + stamp + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    status.textContent = "exported " + marks.size + " wells as " + link.download;
  }

  document.querySelectorAll("figure[data-well]").forEach((fig) => {
    fig.addEventListener("click", () => select(fig.dataset.well));
  });
  document.querySelectorAll("#current .attr").forEach((b) => {
    b.addEventListener("click", () => toggle(b.dataset.attr));
  });
  function chooseTyped() {
    const well = wellInput.value.trim().toUpperCase();
    if (!well || well === current) return;
    select(well);
    wellInput.blur();  // the keys 0-7, n and p act on the chosen well straight away
  }
  wellInput.addEventListener("focus", () => wellInput.select());  // typing replaces the shown well
  wellInput.addEventListener("change", chooseTyped);
  wellInput.addEventListener("keydown", (ev) => { if (ev.key === "Enter") chooseTyped(); });
  $("queue-order").addEventListener("change", (ev) => {  // which queue is shown and walked by n/p
    data.queue = data.queues[ev.target.value];
    Object.keys(data.queues).forEach((name) => { $("queue-" + name).hidden = name !== ev.target.value; });
  });
  document.addEventListener("colouring", render);  // the "Colour by" selector (plates.second_opinion)
  reviewer.addEventListener("input", save);
  $("export").addEventListener("click", exportCsv);
  document.addEventListener("keydown", (ev) => {
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const n = "1234567".indexOf(ev.key);
    if (n >= 0) { toggle(ATTRS[n]); ev.preventDefault(); }
    else if (ev.key === "0") {
      if (current) { marks.delete(current); save(); render(); }
    } else if (ev.key === "n" || ev.key === "ArrowRight") { step(1); ev.preventDefault(); }
    else if (ev.key === "p" || ev.key === "ArrowLeft") { step(-1); ev.preventDefault(); }
  });
  load();
  render();
})();
"""
