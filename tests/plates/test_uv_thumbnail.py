"""The UV thumbnail beside the visible one, in the review page, where the drop has a UV picture."""

from pathlib import Path

from PIL import Image

from crystal_pipeline.plates.labelling import LabelledImage
from crystal_pipeline.plates.report import _thumbnail
from crystal_pipeline.plates.review_page import review_section


def test_the_review_queue_shows_a_uv_thumbnail_only_for_drops_that_have_one(tmp_path):
    probs = tuple([0.0, 0.0, 0.5] + [0.5 / 7] * 7)
    rows = []
    for well in ("A01", "A02"):
        Image.new("L", (40, 40), 90).save(tmp_path / f"{well}.png")
        rows.append(LabelledImage(f"P/{well}", well, tmp_path / f"{well}.png", 3, "crystal", 0.5, probs))
    Image.new("L", (40, 40), 200).save(tmp_path / "A01.uv.png")
    page = review_section("P", rows, 0.5, _thumbnail)
    # Both queue orders (by crystal probability, by what a label teaches) show A01's UV picture once.
    for queue in page.split("<div id='queue-")[1:]:
        assert queue.count("class='uv'") == 1 and "alt='P/A01 UV'" in queue and "P/A02 UV" not in queue
    assert page.count("<div id='queue-") == 2
