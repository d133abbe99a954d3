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

# The same for imager HWI at its own size (128 rows): the oil lighting changes how visible
# crystals are, so where the experts' unanimous labels go (mix_calibration --imager hwi
# --size 128 --per-class 400, 2026-12-03; phase & precipitate's consensus comes from others).
CALIBRATED_DRAWN_MIX_HWI: dict[int, float] = {1: 23.3, 2: 31.03, 3: 12.35, 4: 5.83, 5: 11.79, 6: 10.04, 7: 4.89,
                                              8: 0.0, 9: 0.5, 10: 0.28}
_DRAWN_MIX_BY_IMAGER = {"HWI": CALIBRATED_DRAWN_MIX_HWI}


def normalize_mix(class_mix: Mapping[int | str, float] | None = None, imager: str = "A") -> dict[int, float]:
    """Shares per class id (summing to 1); keys may be class ids or class names. The
    default is the mix calibrated for ``imager`` (:data:`CALIBRATED_DRAWN_MIX`, and
    :data:`CALIBRATED_DRAWN_MIX_HWI` for HWI): Table 2's shares after the unanimity filter.

    Classes left out get no wells. Raises ValueError on unknown classes, negative
    weights or an all-zero mix, so a typo cannot silently empty a class.
    """
    raw = _DRAWN_MIX_BY_IMAGER.get(imager.upper(), CALIBRATED_DRAWN_MIX) if class_mix is None else class_mix
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


# The third entry of a plate's own-mix seed (seed, plate key, PLATE_MIX_STREAM): apart from
# the class draw (seed, key, 0xC1A55), so a plate's wells keep their stream.
PLATE_MIX_STREAM = 0x9207E


def plate_mix(seed: int, plate_key: int, mix: Mapping[int, float], concentration: float | None) -> dict[int, float]:
    """One plate's class mix: ``mix`` itself (``concentration`` None), or a Dirichlet draw
    around it whose mean is ``mix`` (the archive's consensus shares hold on average) and
    whose spread shrinks as ``concentration`` grows. Classes absent from ``mix`` stay absent.
    """
    if concentration is None:
        return dict(mix)
    if concentration <= 0:
        raise ValueError(f"plate mix concentration must be positive, got {concentration}")
    ids = sorted(c for c, w in mix.items() if w > 0)
    rng = np.random.default_rng([seed, plate_key, PLATE_MIX_STREAM])
    shares = rng.dirichlet([concentration * mix[c] for c in ids])
    return {c: float(w) for c, w in zip(ids, shares)}


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
