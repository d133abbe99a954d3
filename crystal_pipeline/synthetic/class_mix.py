"""How many wells of each class a synthetic plate gets.

The paper's Table 2 'Total' column (17,033 validation images) describes the
*consensus* set, after the unanimity filter, not the images drawn. The simulated
experts agree far more often on clear wells than on combined classes, so drawing
Table 2's shares gave a consensus set of about 45% clear and 10% has-crystal
(paper: 34.5% and 18.3%). The default drawn mix is the non-negative
solution of ``w @ M = Table 2`` for the measured matrix M of where each drawn class's
unanimous labels go (:mod:`.mix_calibration`, 300 wells per class at 256 px, difficulty
0.5; docs/synthetic_archive.md has the figures), so the consensus set lands on Table 2's
shares: the paper's imbalance, where a benchmark on this archive meets it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from crystal_pipeline.classes import CLASSES, class_id_for_name

# class id -> images in the paper's validation set (Table 2, 'Total' column)
TABLE2_TOTALS: dict[int, int] = {1: 5877, 2: 5732, 3: 1391, 4: 1121, 5: 1339, 6: 873, 7: 393, 8: 83, 9: 136, 10: 88}

# class id -> drawn share (%), calibrated so the unanimous consensus set has TABLE2_TOTALS'
# shares (each class within 2 points, has-crystal within 2 points of 18.3%).
CALIBRATED_DRAWN_MIX: dict[int, float] = {1: 21.08, 2: 30.74, 3: 13.26, 4: 4.83, 5: 12.49, 6: 9.34, 7: 7.56, 8: 0.02,
                                          9: 0.34, 10: 0.34}


def normalize_mix(class_mix: Mapping[int | str, float] | None = None) -> dict[int, float]:
    """Shares per class id (summing to 1); keys may be class ids or class names. The
    default is :data:`CALIBRATED_DRAWN_MIX` (Table 2's shares after the unanimity filter).

    Classes left out get no wells. Raises ValueError on unknown classes, negative
    weights or an all-zero mix, so a typo cannot silently empty a class.
    """
    raw = CALIBRATED_DRAWN_MIX if class_mix is None else class_mix
    weights: dict[int, float] = {cid: 0.0 for cid in CLASSES}
    for key, weight in raw.items():
        try:
            cid = int(key) if not isinstance(key, str) or key.isdigit() else class_id_for_name(key)
        except KeyError:
            raise ValueError(f"unknown class {key!r} in class_mix") from None
        if cid not in CLASSES:
            raise ValueError(f"unknown class id {cid} in class_mix")
        if weight < 0:
            raise ValueError(f"negative weight for class {key!r}")
        weights[cid] += float(weight)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("class_mix gives no class a positive weight")
    return {cid: w / total for cid, w in weights.items()}


def assign_classes(rng: np.random.Generator, n_wells: int, mix: Mapping[int, float]) -> np.ndarray:
    """Class id per well: counts follow the mix to within one well, placed at random.

    Whole wells go by the floor of each share; the leftover wells are drawn in
    proportion to the fractions, so rare classes still appear on small plates
    without every plate rounding them the same way.
    """
    ids = np.array(sorted(mix), dtype=np.int64)
    expected = np.array([mix[c] for c in ids]) * n_wells
    counts = np.floor(expected).astype(np.int64)
    short = n_wells - int(counts.sum())
    if short:
        frac = expected - counts
        extra = rng.choice(len(ids), size=short, replace=False, p=frac / frac.sum())
        counts[extra] += 1
    labels = np.repeat(ids, counts)
    rng.shuffle(labels)
    return labels
