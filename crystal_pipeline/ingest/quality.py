"""Data-quality rules that downstream work relies on, as plain functions.

The Dagster asset checks call these; keeping the rules here means they are unit
tested without Dagster and the same rule is never written twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from crystal_pipeline.classes import CLASS_NAMES, CRYSTAL_CLASS_IDS
from crystal_pipeline.ingest.consensus import plate_of


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict = field(default_factory=dict)


def val_share_tolerance(n: int, val_fraction: float, tolerance: float) -> float:
    """The allowed |val share - val_fraction|.

    DESIGN.md asks for 2 points on 1,000 images or more. On fewer images a hash
    split legitimately strays further by chance, so the allowance widens to three
    binomial standard errors there instead of the check being skipped.
    """
    if n >= 1000:
        return tolerance
    return max(tolerance, 3 * math.sqrt(val_fraction * (1 - val_fraction) / max(n, 1)))


def label_table_checks(stored: pd.DataFrame) -> list[CheckOutcome]:
    """Checks on ``consensus_labels`` as stored (``labels.stored_labels_with_images``'s frame).

    ``unique_image_ids``: every label's image id appears once and names exactly one
    decodable ``images`` row (a label whose picture is missing or quarantined cannot be
    trained on). ``class_ids_in_range``: every class id is 1..10 and its stored
    ``class_name`` and ``has_crystal`` are that class's.
    """
    ids = stored["image_id"]
    dupes = sorted(set(ids[ids.duplicated()]))
    orphans = stored.loc[(stored["image_rows"] != 1) | (stored["ok_rows"] != 1), "image_id"].tolist()
    in_range = stored["class_id"].between(1, len(CLASS_NAMES))
    expected_name = stored["class_id"].map(lambda c: CLASS_NAMES[c - 1] if 1 <= c <= len(CLASS_NAMES) else None)
    expected_crystal = stored["class_id"].isin(sorted(CRYSTAL_CLASS_IDS))
    bad = ~in_range | (stored["class_name"] != expected_name) | (stored["has_crystal"] != expected_crystal)
    bad_ids = stored.loc[bad, "image_id"].tolist()
    return [
        CheckOutcome("unique_image_ids", not dupes and not orphans,
                     {"labels": len(stored), "duplicates": len(dupes), "without_one_decodable_image": len(orphans),
                      "examples": ", ".join((dupes + orphans)[:10])}),
        CheckOutcome("class_ids_in_range", not bad_ids,
                     {"labels": len(stored), "out_of_range_or_inconsistent": len(bad_ids),
                      "examples": ", ".join(bad_ids[:10])}),
    ]


def split_checks(labels: pd.DataFrame, *, split_by: str, val_fraction: float, tolerance: float) -> list[CheckOutcome]:
    """Checks of a run's split rule on the stored labels: val share, plate leakage."""
    n = len(labels)
    val = int((labels["split"] == "val").sum())
    share = val / n if n else 0.0
    allowed = val_share_tolerance(n, val_fraction, tolerance)
    sides = labels.assign(plate=labels["image_id"].map(plate_of)).groupby("plate")["split"].nunique()
    both = sorted(sides[sides > 1].index)
    return [
        CheckOutcome("validation_share", n > 0 and abs(share - val_fraction) <= allowed,
                     {"val_share": round(share, 4), "target": val_fraction, "allowed_deviation": round(allowed, 4),
                      "labelled_images": n}),
        CheckOutcome("no_plate_on_both_sides", split_by != "plate" or not both,
                     {"split_by": split_by, "plates_on_both_sides": len(both),
                      "examples": ", ".join(both[:10]),
                      "applies": "only with split_by=plate; with split_by=image plates span both sides by design"}),
    ]
