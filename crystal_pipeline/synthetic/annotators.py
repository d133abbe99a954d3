"""Simulated experts who disagree where the image is genuinely ambiguous.

Each annotator sees every present attribute with its rendered visibility, scaled by
their own sensitivity and blurred by per-look noise, and misses it below their
threshold; a decoy (fine grains that look microcrystalline, a bubble that looks like
an oil droplet, dust that looks like junk) is reported when it looks convincing
enough to them. On hard images they add ``unsure``. Easy images therefore come out
unanimous and hard ones split, which is what makes the paper's unanimous subset
(85,188 of 163,894 images) cleaner than the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crystal_pipeline.synthetic.render import WellTruth

# How many experts looked at one image: 1 to 4.
PANEL_SIZE_P = (0.15, 0.30, 0.33, 0.22)
LOOK_NOISE = 0.15  # spread of one look at one feature


@dataclass(frozen=True)
class Annotator:
    name: str
    sensitivity: float  # multiplies visibility
    threshold: float  # seen below this = not reported
    credulity: float  # multiplies decoy evidence
    caution: float  # propensity to say unsure on hard images


def annotator_pool(seed: int, count: int = 12) -> list[Annotator]:
    """The archive's experts, fixed by the seed so annotations are reproducible."""
    rng = np.random.default_rng([seed, 0xA770])
    return [
        Annotator(
            name=f"expert{i + 1:02d}",
            sensitivity=float(rng.uniform(0.85, 1.2)),
            threshold=float(rng.uniform(0.15, 0.3)),
            credulity=float(rng.uniform(0.7, 1.3)),
            caution=float(rng.uniform(0.3, 0.9)),
        )
        for i in range(count)
    ]


def label_once(rng: np.random.Generator, truth: WellTruth, who: Annotator) -> frozenset[str]:
    """One expert's attribute set for one image."""
    seen = set()
    for attr, visible in truth.visibility.items():
        if visible * who.sensitivity + rng.normal(0.0, LOOK_NOISE) > who.threshold:
            seen.add(attr)
    for attr, evidence in truth.decoys.items():
        if evidence * who.credulity + rng.normal(0.0, LOOK_NOISE) > 0.55:
            seen.add(attr)
    if not seen:
        seen.add("clear")
    if rng.random() < who.caution * truth.difficulty**1.5:
        seen.add("unsure")
    return frozenset(seen)


def annotate(rng: np.random.Generator, truth: WellTruth, pool: list[Annotator]) -> list[tuple[str, frozenset[str]]]:
    """A panel of 1-4 distinct experts and the attribute set each gave."""
    n = int(rng.choice(len(PANEL_SIZE_P), p=PANEL_SIZE_P)) + 1
    panel = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [(pool[i].name, label_once(rng, truth, pool[i])) for i in sorted(panel)]
