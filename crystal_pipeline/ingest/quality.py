"""Data-quality rules that downstream work relies on, as plain functions.

The Dagster asset checks call these; keeping the rules here means they are unit
tested without Dagster and the same rule is never written twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

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


def split_checks(labels: pd.DataFrame, *, split_by: str, val_fraction: float, tolerance: float) -> list[CheckOutcome]:
    """Checks on the consensus table: unique ids, class ids, val share, plate leakage."""
    n = len(labels)
    dupes = labels["image_id"][labels["image_id"].duplicated()].tolist()
    bad_class = labels.loc[~labels["class_id"].between(1, 10), "image_id"].tolist()
    val = int((labels["split"] == "val").sum())
    share = val / n if n else 0.0
    allowed = val_share_tolerance(n, val_fraction, tolerance)
    sides = labels.assign(plate=labels["image_id"].map(plate_of)).groupby("plate")["split"].nunique()
    both = sorted(sides[sides > 1].index)
    return [
        CheckOutcome("unique_image_ids", not dupes, {"duplicates": len(dupes), "examples": ", ".join(dupes[:10])}),
        CheckOutcome("class_ids_in_range", not bad_class,
                     {"out_of_range": len(bad_class), "examples": ", ".join(bad_class[:10])}),
        CheckOutcome("validation_share", n > 0 and abs(share - val_fraction) <= allowed,
                     {"val_share": round(share, 4), "target": val_fraction, "allowed_deviation": round(allowed, 4),
                      "labelled_images": n}),
        CheckOutcome("no_plate_on_both_sides", split_by != "plate" or not both,
                     {"split_by": split_by, "plates_on_both_sides": len(both),
                      "examples": ", ".join(both[:10]),
                      "applies": "only with split_by=plate; with split_by=image plates span both sides by design"}),
    ]
