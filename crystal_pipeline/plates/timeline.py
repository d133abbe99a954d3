"""A plate over time: each well's (and drop's) label at every inspection, and when it became a hit.

Screening labs image a plate on a schedule (HWI: six times over six weeks); crystals
grow, so what a crystallographer wants from the newest imaging is first the wells
that *became* hits since the previous one. This module turns the plate's stored
predictions (:func:`crystal_pipeline.warehouse.predictions.plate_history`) into a
:class:`Timeline`: inspections in the one order
(:func:`crystal_pipeline.ingest.inspections.inspection_sort_key`), each well-drop's
observations, its first hit inspection, and the hits new at a given inspection.
Plain Python: the asset writes :meth:`Timeline.csv_bytes`, the plate report reads the rest.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from crystal_pipeline import wells
from crystal_pipeline.ingest.inspections import inspection_sort_key, inspection_time

CSV_COLUMNS = ("plate_id", "well", "drop", "inspection", "inspection_order", "inspection_time", "image_id",
               "class_id", "class_name", "crystal_prob", "hit", "first_hit_inspection", "model_version")


@dataclass(frozen=True)
class Observation:
    """One well-drop at one inspection, as labelled."""

    inspection: str | None
    well: str
    drop: int
    image_id: str
    class_id: int
    class_name: str
    crystal_prob: float
    model_version: str
    path: Path | None = None


@dataclass
class WellHistory:
    """A well-drop across inspections (earliest first) and the first inspection it was a hit at."""

    well: str
    drop: int
    observations: list[Observation] = field(default_factory=list)
    first_hit: str | None = None
    ever_hit: bool = False

    @property
    def slot(self) -> str:
        return wells.slot_name(self.well, self.drop)

    def at(self, inspection: str | None) -> Observation | None:
        return next((o for o in self.observations if o.inspection == inspection), None)


@dataclass
class Timeline:
    """Every well-drop of one plate over its inspections, with hits at ``threshold``."""

    plate_id: str
    inspections: list[str | None]
    threshold: float
    wells: list[WellHistory]

    def follows_another(self, inspection: str | None) -> bool:
        """Whether ``inspection`` is one of the plate's and not its first (so it has a previous one)."""
        return inspection in self.inspections and self.inspections.index(inspection) > 0

    def previous(self, inspection: str | None) -> str | None:
        """The inspection before ``inspection`` in order (None at the first, or when unknown)."""
        return self.inspections[self.inspections.index(inspection) - 1] if self.follows_another(inspection) else None

    def is_hit(self, history: WellHistory, inspection: str | None) -> bool:
        seen = history.at(inspection)
        return seen is not None and seen.crystal_prob >= self.threshold

    def new_hits(self, inspection: str | None) -> list[WellHistory]:
        """Well-drops that are hits at ``inspection`` and were not at the previous inspection
        (not a hit there, or not imaged there), most likely first. None at the first inspection:
        nothing can have changed before it."""
        if not self.follows_another(inspection):
            return []
        before = self.previous(inspection)
        new = [h for h in self.wells if self.is_hit(h, inspection) and not self.is_hit(h, before)]
        return sorted(new, key=lambda h: (-h.at(inspection).crystal_prob, h.slot))

    def hits_at(self, inspection: str | None) -> list[WellHistory]:
        """Every well-drop that is a hit at ``inspection``, most likely first."""
        hits = [h for h in self.wells if self.is_hit(h, inspection)]
        return sorted(hits, key=lambda h: (-h.at(inspection).crystal_prob, h.slot))

    def csv_bytes(self) -> bytes:
        """The time course as a long table: one row per well-drop and inspection (``CSV_COLUMNS``)."""
        order = {name: i for i, name in enumerate(self.inspections, 1)}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for h in self.wells:
            for o in h.observations:
                when = inspection_time(o.inspection) if o.inspection else None
                writer.writerow([self.plate_id, h.well, h.drop, o.inspection or "", order[o.inspection],
                                 when.isoformat() if when else "", o.image_id, o.class_id, o.class_name,
                                 f"{o.crystal_prob:.6f}", int(o.crystal_prob >= self.threshold),
                                 h.first_hit or "", o.model_version])
        return buffer.getvalue().encode()


def build_timeline(plate_id: str, records: Iterable[Mapping[str, Any]], threshold: float) -> Timeline:
    """The plate's :class:`Timeline` from prediction records (``plate_history``'s columns).

    Records whose well is no well name (loose files) are left out: a time course follows wells.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    by_slot: dict[tuple[str, int], WellHistory] = {}
    inspections: set[str | None] = set()
    for r in records:
        try:
            well = wells.parse_well(str(r["well"]))
        except wells.InvalidWell:
            continue
        inspection = _text_or_none(r.get("inspection"))
        drop = int(_number_or(r.get("drop"), 1))
        inspections.add(inspection)
        history = by_slot.setdefault((well.name, drop), WellHistory(well.name, drop))
        path = _text_or_none(r.get("path"))
        history.observations.append(Observation(
            inspection, well.name, drop, str(r["image_id"]), int(r["class_id"]), str(r["class_name"]),
            float(r["crystal_prob"]), str(r.get("model_version") or ""), Path(path) if path else None))
    ordered = sorted(inspections, key=inspection_sort_key)
    rank = {name: i for i, name in enumerate(ordered)}
    for history in by_slot.values():
        history.observations.sort(key=lambda o: rank[o.inspection])
        first = next((o for o in history.observations if o.crystal_prob >= threshold), None)
        history.ever_hit = first is not None
        history.first_hit = first.inspection if first is not None else None
    rows = sorted(by_slot.values(), key=lambda h: (_row_col(h.well), h.drop))
    return Timeline(plate_id, ordered, threshold, rows)


def _row_col(name: str) -> tuple[int, int]:
    w = wells.parse_well(name)
    return w.row, w.col


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text and text != "<NA>" else None  # pandas' missing value, when a frame's rows come here


def _number_or(value: Any, default: int) -> Any:
    try:
        return default if value is None or math.isnan(float(value)) else value
    except (TypeError, ValueError):
        return default


def load_timeline(warehouse, plate_id: str, model_version: str | None, threshold: float) -> Timeline:
    """The plate's timeline from the warehouse's predictions (one query, see ``plate_history``)."""
    from crystal_pipeline.warehouse import predictions as prediction_table

    frame = prediction_table.plate_history(warehouse, plate_id, model_version)
    return build_timeline(plate_id, frame.to_dict("records"), threshold)


def timeline_problems(csv_path: Path, inspection: str | None, labelled_image_ids: Iterable[str]) -> list[str]:
    """What is wrong with a written timeline.csv for one inspection: every labelled image of that
    inspection must appear exactly once, no other image of it may, and each well-drop's
    ``first_hit_inspection`` must be its earliest row with ``hit`` = 1. Empty when it holds."""
    path = Path(csv_path)
    if not path.is_file():
        return [f"no timeline file at {path}"]
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    problems: list[str] = []
    here = [r["image_id"] for r in rows if (r["inspection"] or None) == inspection]
    expected = set(labelled_image_ids)
    doubled = sorted({i for i in here if here.count(i) > 1})
    if doubled:
        problems.append(f"image(s) twice at inspection {inspection}: {', '.join(doubled[:10])}")
    if set(here) != expected:
        lost, extra = sorted(expected - set(here)), sorted(set(here) - expected)
        problems.append(f"inspection {inspection}: {len(lost)} labelled image(s) missing from the timeline "
                        f"{lost[:10]}, {len(extra)} not labelled {extra[:10]}")
    by_slot: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_slot.setdefault((r["well"], r["drop"]), []).append(r)
    for (well, drop), seen in by_slot.items():
        seen.sort(key=lambda r: int(r["inspection_order"]))
        first = next((r["inspection"] for r in seen if r["hit"] == "1"), "")
        if any(r["first_hit_inspection"] != first for r in seen):
            problems.append(f"well {well} drop {drop}: first_hit_inspection is not its first hit ({first or 'none'})")
    return problems
