"""The review order by what a label teaches: a permutation of the plate's wells, the most
uncertain first, spread across classes and the plate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.evaluation.metrics import crystal_probability
from crystal_pipeline.plates import review_order
from crystal_pipeline.plates.labelling import LabelledImage
from crystal_pipeline.plates.review_order import correction_value, teaching_order


def _row(well: str, probs) -> LabelledImage:
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    k = int(probs.argmax())
    return LabelledImage(f"P/{well}", well, Path("/nonexistent.png"), k + 1, CLASS_NAMES[k],
                         float(crystal_probability(probs[None])[0]), tuple(probs.tolist()))


def _plate(seed: int = 0) -> list[LabelledImage]:
    rng = np.random.default_rng(seed)
    wells = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
    return [_row(w, rng.dirichlet(np.full(10, rng.choice([0.05, 0.3, 3.0])))) for w in wells]


def test_the_order_is_a_permutation_of_the_plates_wells_with_the_most_uncertain_first():
    rows = _plate()
    order = teaching_order(rows, threshold=0.5)
    assert sorted(r.image_id for r in order) == sorted(r.image_id for r in rows)
    value = dict(zip((r.image_id for r in rows),
                     correction_value(np.array([r.probs for r in rows]), np.array([r.crystal_prob for r in rows]), 0.5)))
    assert value[order[0].image_id] == max(value.values())
    ranked = [value[r.image_id] for r in order]
    assert np.mean(ranked[:24]) > np.mean(ranked[-24:]) + 0.3  # the queue's head is the doubtful end
    assert teaching_order(list(reversed(rows)), 0.5) == order  # input order does not matter


def test_correction_value_counts_the_calls_a_label_may_change():
    certain = np.eye(10)[[0]]
    uniform = np.full((1, 10), 0.1)
    assert correction_value(certain, np.array([0.0]), 0.5)[0] == pytest.approx(0.0)
    # uniform: the class call is wrong 90% of the time; crystal p 0.3 at threshold 0.5 says
    # "no crystal", wrong 30% of the time.
    assert correction_value(uniform, np.array([0.3]), 0.5)[0] == pytest.approx(0.9 + 0.3)
    assert correction_value(uniform, np.array([0.8]), 0.5)[0] == pytest.approx(0.9 + 0.2)


def test_the_order_spreads_across_classes_and_the_plate(monkeypatch):
    rest = [0.025] * 8
    rows = [_row("A01", [0.45, 0.35] + rest), _row("A02", [0.449, 0.351] + rest),  # class 1, neighbours
            _row("H12", [0.33, 0.47] + rest)]  # class 2, a little less doubtful, far away
    value = correction_value(np.array([r.probs for r in rows]), np.array([r.crystal_prob for r in rows]), 0.5)
    assert value[1] > value[0] > value[2]  # by value alone: A02, A01, H12
    assert [r.well for r in teaching_order(rows, 0.5)] == ["A02", "H12", "A01"]
    monkeypatch.setattr(review_order, "CLASS_DISCOUNT", 1.0)
    monkeypatch.setattr(review_order, "NEIGHBOUR_DISCOUNT", 1.0)
    assert [r.well for r in teaching_order(rows, 0.5)] == ["A02", "A01", "H12"]


def test_an_empty_plate_has_an_empty_order():
    assert teaching_order([], 0.5) == []


def test_the_review_page_offers_both_orders():
    import json
    import re

    from crystal_pipeline.plates.review_page import review_queue, review_section

    rows = _plate(1)
    html = review_section("P", rows, 0.5, thumbnail=lambda path: None, queue_size=10)
    data = json.loads(re.search(r"<script type='application/json' id='review-data'>(.*?)</script>", html, re.S).group(1))
    assert data["queues"]["teaches"] == [r.slot for r in teaching_order(rows, 0.5)[:10]]
    assert data["queues"]["probability"] == data["queue"] == [r.slot for r in review_queue(rows, 0.5, 10)]
    assert "by what a label teaches" in html and "by crystal probability" in html
