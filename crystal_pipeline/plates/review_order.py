"""The review queue ordered by what a label teaches: the expected value of a correction.

The review page's first order (``review_page.review_queue``) puts the calibrated crystal
probability nearest the threshold first: it serves today's hit list. A label teaches the
model most where it is likely to be wrong, and a queue of 24 near-identical doubtful wells
teaches one thing 24 times. This order scores each well by how likely a reviewer's label is
to correct the model (from the calibrated probabilities labelling reports,
:func:`crystal_pipeline.plates.labelling.label_plate`), then picks greedily with a
diversity discount, so the queue spreads across classes and across the plate:

- ``value`` = (1 - the top class's probability: the chance the 10-class call is wrong) +
  (the chance the crystal yes/no call at the plate's threshold is wrong: ``crystal_prob``
  when the call is "no crystal", ``1 - crystal_prob`` when it is "crystal"). Both come from
  calibrated probabilities, so they are chances, not ranks; 0 = certain, at most 1.9.
- Each well already picked whose predicted class is the candidate's multiplies the
  candidate's value by :data:`CLASS_DISCOUNT`; a pick within :data:`NEIGHBOUR_REACH` wells
  (same drop position or not) multiplies it by :data:`NEIGHBOUR_DISCOUNT` (neighbouring
  wells on a screen hold similar cocktails, so they tend to fail alike).

The first well is always the most uncertain one (nothing is picked yet, no discount).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crystal_pipeline import wells
from crystal_pipeline.plates.labelling import LabelledImage

#: Factor per already-picked well of the same predicted class.
CLASS_DISCOUNT = 0.8
#: Factor when an already-picked well lies within NEIGHBOUR_REACH rows and columns.
NEIGHBOUR_DISCOUNT = 0.7
NEIGHBOUR_REACH = 1
ORDER_RULE = ("expected corrections a label brings (1 - top class probability, plus the chance the crystal call "
              "at the threshold is wrong), discounted x{cls} per earlier pick of the same predicted class and "
              "x{near} next to an earlier pick, so the queue spreads across classes and the plate")


def correction_value(probs: np.ndarray, crystal_prob: np.ndarray, threshold: float) -> np.ndarray:
    """Per well: the expected number of the model's two calls (class, crystal yes/no) a
    correct label would change (see the module docstring); ``probs`` is N x 10, calibrated."""
    probs = np.asarray(probs, dtype=np.float64)
    crystal_prob = np.asarray(crystal_prob, dtype=np.float64)
    class_wrong = 1.0 - probs.max(axis=1)
    crystal_wrong = np.where(crystal_prob >= threshold, 1.0 - crystal_prob, crystal_prob)
    return class_wrong + crystal_wrong


def _positions(rows: Sequence[LabelledImage]) -> np.ndarray:
    """(row, column) of each well on its plate; wells whose name does not parse sit far away."""
    out = np.full((len(rows), 2), -10**6, dtype=np.int64)
    for i, r in enumerate(rows):
        try:
            well = wells.parse_well(r.well)
        except ValueError:
            continue
        out[i] = (well.row, well.col)
    return out


def teaching_order(rows: Sequence[LabelledImage], threshold: float) -> list[LabelledImage]:
    """Every well of ``rows`` once, the one whose label teaches most first (module docstring)."""
    n = len(rows)
    if n == 0:
        return []
    value = correction_value(np.array([r.probs for r in rows]), np.array([r.crystal_prob for r in rows]), threshold)
    classes = np.array([r.class_id for r in rows])
    where = _positions(rows)
    # Ties: by image id, so the order never depends on the order the rows came in.
    tie = np.argsort(np.argsort([r.image_id for r in rows], kind="stable"))
    discount = np.ones(n)
    left = np.ones(n, dtype=bool)
    order = []
    for _ in range(n):
        score = np.where(left, value * discount, -np.inf)
        best = np.flatnonzero(score == score.max())
        pick = int(best[np.argmin(tie[best])])
        order.append(pick)
        left[pick] = False
        discount[classes == classes[pick]] *= CLASS_DISCOUNT
        near = np.abs(where - where[pick]).max(axis=1) <= NEIGHBOUR_REACH
        discount[near] *= NEIGHBOUR_DISCOUNT
    return [rows[i] for i in order]
