"""The visible model's call beside the fused one's on a UV plate (issue 20 item 7).

A plate with UV pictures is labelled by the fused (visible + UV) model, its label of record;
where a visible production model exists, it labels the plate too (``plates.model_choice``).
The report's plate map and the review page then offer a selector, "Colour by", between the
two models' calls, and mark the wells whose crystal call differs (each model at its own hit
threshold): where the UV picture changed the call. The selector is a ``select.colouring``
in each place; :data:`COLOURING_SCRIPT` keeps them in step through ``body[data-colouring]``,
and :data:`COLOURING_CSS` shows the ``.by-fused`` or the ``.by-visible`` parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from crystal_pipeline.plates.labelling import LabelledImage, PlateLabels

FUSED_TITLE = "fused (visible + UV)"
VISIBLE_TITLE = "visible only"
#: The plate map's mark on a well whose crystal call differs between the two models.
CHANGED_RULE = "the crystal call (crystal_prob >= each model's own hit threshold) differs between the two models"


@dataclass(frozen=True)
class SecondOpinion:
    """The visible model's labels of the plate as stored, and its own hit threshold."""

    model_version: str
    labels: PlateLabels
    crystal_threshold: float

    def by_slot(self) -> dict[str, LabelledImage]:
        return {r.slot: r for r in self.labels.rows}


def changed_calls(rows: Sequence[LabelledImage], threshold: float, second: SecondOpinion) -> list[str]:
    """Slots labelled by both models whose crystal call differs (:data:`CHANGED_RULE`), in the
    order of ``rows`` (the record's)."""
    other = second.by_slot()
    return [r.slot for r in rows if r.slot in other
            and (r.crystal_prob >= threshold) != (other[r.slot].crystal_prob >= second.crystal_threshold)]


def colouring_select() -> str:
    """The "Colour by" selector (every copy on a page moves together)."""
    return (f"<label>Colour by <select class='colouring'><option value='fused'>{FUSED_TITLE}</option>"
            f"<option value='visible'>{VISIBLE_TITLE}</option></select></label>")


COLOURING_CSS = ("body[data-colouring='visible'] .by-fused{display:none}"
                 "body:not([data-colouring='visible']) .by-visible{display:none}"
                 ".changed{color:#b0006a;font-weight:bold}")

COLOURING_SCRIPT = r"""
(function () {
  "use strict";
  const selects = document.querySelectorAll("select.colouring");
  selects.forEach((s) => s.addEventListener("change", (ev) => {
    document.body.dataset.colouring = ev.target.value;
    selects.forEach((other) => { other.value = ev.target.value; });
    document.dispatchEvent(new Event("colouring"));  // the review page re-renders its "model says"
  }));
})();
"""


def page_assets() -> str:
    """The selector's style and script, once per page."""
    return f"<style>{COLOURING_CSS}</style><script>{COLOURING_SCRIPT}</script>"


def map_section(record_png: bytes, second_png: bytes, changed: Sequence[str]) -> str:
    """The plate map's HTML with both colourings and the selector between them."""
    from crystal_pipeline.reporting.html import embedded_image, escape

    listed = _listed(changed)
    return ("<h2>Plate map</h2>"
            f"<p>{colouring_select()} <span class='changed'>{len(changed)} wells</span> where {escape(CHANGED_RULE)}"
            f" (magenta diamonds){': ' + escape(listed) if changed else ''}.</p>"
            f"<div class='by-fused'>{embedded_image(record_png, 'plate map')}</div>"
            f"<div class='by-visible'>{embedded_image(second_png, 'plate map, ' + VISIBLE_TITLE)}</div>")


def visible_map_png(plate_key: str, plate_format: int, second: SecondOpinion, changed: Sequence[str]) -> bytes:
    """The plate map coloured by the visible model's calls, the differing wells marked."""
    from crystal_pipeline.reporting.plate_map import plate_map_png

    return plate_map_png(plate_key, plate_format, second.labels, second.crystal_threshold, changed=set(changed),
                         title=f"{plate_key}, {VISIBLE_TITLE}")


def summary_line(second: SecondOpinion, changed: Sequence[str]) -> str:
    """The report summary's "second opinion" entry."""
    return (f"{second.model_version} ({VISIBLE_TITLE}, crystal p >= {second.crystal_threshold:.3f}): "
            f"the crystal call differs in {len(changed)} wells")


def meta(second: SecondOpinion, changed: Sequence[str]) -> dict:
    """``hits.meta.json``'s ``second_opinion``: the model and the wells whose call it makes otherwise."""
    return {"model_version": second.model_version, "title": VISIBLE_TITLE,
            "crystal_threshold": second.crystal_threshold, "calls_differ": list(changed)}


def map_markdown(second_png: bytes, changed: Sequence[str]) -> str:
    """The visible model's map in Markdown (the Dagster UI), with the wells whose call differs."""
    from crystal_pipeline.reporting import markdown as md

    listed = _listed(changed)
    return md.blocks(f"**Coloured by the {VISIBLE_TITLE} model**: {len(changed)} wells where {CHANGED_RULE} "
                     f"(magenta diamonds){': ' + md.cell(listed) if changed else ''}.",
                     md.image(second_png, "plate map, " + VISIBLE_TITLE))


def _listed(changed: Sequence[str], most: int = 60) -> str:
    """The differing wells as one line, the first ``most`` of them."""
    return ", ".join(changed[:most]) + (" ..." if len(changed) > most else "")
