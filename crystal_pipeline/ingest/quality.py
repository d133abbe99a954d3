"""Data-quality rules that downstream work relies on, as plain functions.

The Dagster asset checks call these; keeping the rules here means they are unit
tested without Dagster and the same rule is never written twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from crystal_pipeline.classes import CLASS_NAMES, CRYSTAL_CLASS_IDS
from crystal_pipeline.ingest.splits import SIDES, SplitConfig, find_leaks, group_key


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict = field(default_factory=dict)


def share_tolerance(n: int, fraction: float, tolerance: float) -> float:
    """The allowed |side share - fraction| when ``n`` groups (wells, plates or images) are split.

    DESIGN.md asks for 2 points on 1,000 groups or more. On fewer groups a hash
    split legitimately strays further by chance, so the allowance widens to three
    binomial standard errors there instead of the check being skipped.
    """
    if n >= 1000:
        return tolerance
    return max(tolerance, 3 * math.sqrt(fraction * (1 - fraction) / max(n, 1)))


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


def split_checks(labels: pd.DataFrame, split: SplitConfig, *, tolerance: float) -> list[CheckOutcome]:
    """Checks of a run's split rule on the stored labels (``image_id``, ``split``, ``sha256``).

    ``split_shares``: each side's share of the labelled images is within the tolerance
    of its configured fraction (the tolerance counts groups, the unit that is hashed).
    ``no_leak_across_sides``: no group of the configured kind (a well, by default) and no
    file hash has images on two sides.
    """
    n = len(labels)
    groups = labels["image_id"].map(lambda i: group_key(i, split.by)).nunique() if n else 0
    targets = {"train": split.train, "val": split.val, "test": split.test}
    shares = {side: float((labels["split"] == side).sum()) / n if n else 0.0 for side in SIDES}
    allowed = {side: share_tolerance(groups, targets[side], tolerance) for side in SIDES}
    unknown = sorted(set(labels["split"]) - set(SIDES))
    shares_ok = n > 0 and not unknown and all(abs(shares[s] - targets[s]) <= allowed[s] for s in SIDES)
    hashes = labels["sha256"] if "sha256" in labels else [None] * n
    leaks = find_leaks(zip(labels["image_id"], labels["split"], hashes), split.by)
    return [
        CheckOutcome("split_shares", shares_ok, {
            "labelled_images": n, "groups": int(groups), "split_by": split.by,
            **{f"{s}_share": round(shares[s], 4) for s in SIDES}, **{f"{s}_target": targets[s] for s in SIDES},
            **{f"{s}_allowed_deviation": round(allowed[s], 4) for s in SIDES},
            "unknown_sides": ", ".join(map(str, unknown)) or "none"}),
        CheckOutcome("no_leak_across_sides", leaks.none, {
            "split_by": split.by, "groups_on_two_sides": len(leaks.wells), "hashes_on_two_sides": len(leaks.hashes),
            "examples": ", ".join(leaks.wells[:5] + leaks.hashes[:5]) or "none"}),
    ]
