"""The review page's queue rule and data block, without a browser."""

import json
import math
import re
from pathlib import Path

import pytest

from crystal_pipeline.plates.labelling import LabelledImage
from crystal_pipeline.plates.review_page import entropy, review_queue, review_section


def _row(well, crystal, probs=None):
    probs = probs or tuple([crystal] + [(1 - crystal) / 9] * 9)
    return LabelledImage(f"P/{well}", well, Path("/nonexistent.png"), 3, "crystal", crystal, probs)


def test_entropy_is_zero_for_certainty_and_ln10_for_uniform():
    assert entropy([1.0] + [0.0] * 9) == 0.0
    assert entropy([0.1] * 10) == pytest.approx(math.log(10))


def test_queue_is_crystal_prob_nearest_the_threshold_then_higher_entropy():
    sure = (0.4, 0.6) + (0.0,) * 8
    doubtful = (0.4,) + (0.6 / 9,) * 9
    rows = [_row("A01", 0.95), _row("A02", 0.40, sure), _row("A03", 0.40, doubtful), _row("A04", 0.05),
            _row("A05", 0.71)]
    assert [r.well for r in review_queue(rows, 0.7, 4)] == ["A05", "A01", "A03", "A02"]


def test_section_carries_every_well_and_cannot_close_its_script_early():
    rows = [_row("A01", 0.9), _row("AA01", 0.2), _row("B01", 0.5)]
    # No plate id holds "/" (naming.check_name_part), so "</script>" cannot be one; "<!--<script>" can.
    page = review_section("P<!--<script>@day1", rows, 0.5, thumbnail=lambda path: None)
    block = re.search(r"<script type='application/json' id='review-data'>(.*?)</script>", page, re.S).group(1)
    data = json.loads(block)
    assert data["plate_id"] == "P<!--<script>" and data["inspection"] == "day1"
    assert "<!--" not in page
    assert sorted(data["wells"], key=lambda w: data["wells"][w]["order"]) == ["A01", "B01", "AA01"]
    assert data["queue"] == ["B01", "AA01", "A01"]
    assert page.count("data-attr=") == 7 and "no preview" in page


def test_two_drops_of_one_well_are_reviewed_apart_and_exported_with_their_drop():
    rows = [_row("A01", 0.9), LabelledImage("P/A01_2", "A01", Path("/nonexistent.png"), 1, "clear", 0.1,
                                            tuple([0.1] + [0.1] * 9), drop=2)]
    page = review_section("P", rows, 0.5, thumbnail=lambda path: None)
    data = json.loads(re.search(r"<script type='application/json' id='review-data'>(.*?)</script>", page,
                                re.S).group(1))
    assert {k: (v["well"], v["drop"]) for k, v in data["wells"].items()} == {"A01": ("A01", 1), "A01_2": ("A01", 2)}
    assert "plate_id,well,drop,inspection,annotator,attributes" in page  # the export's header names the drop
