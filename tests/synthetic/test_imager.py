"""The second imager: lab A's images unchanged bit for bit, lab B's visibly another camera."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from crystal_pipeline.cli import demo_archive
from crystal_pipeline.synthetic import write_plate
from crystal_pipeline.synthetic.imager import IMAGER_A, IMAGER_B, imager_named

# sha256 of the decoded pixels of wells A01, A02, B05 and H12 of plate SYN0001 (seed 3,
# 96 wells, 64 px). Imager A was byte-identical to the generator before imagers (commit
# 4ec9519, docs/benchmarks.md); this pins it as of the change that made crystals displace
# precipitate and recalibrated the class mix (issue 9), so a drawing change must update it
# knowingly.
PIXELS_IMAGER_A = "6f55b440d808e45c03b9bdbe60e77157391d43722c4b887d10c5605a5a880621"
WELLS = ("A01", "A02", "B05", "H12")


def _pixels(plate_dir) -> list[np.ndarray]:
    return [np.asarray(Image.open(plate_dir / f"{well}.png")) for well in WELLS]


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagers")
    for name in ("A", "B"):
        write_plate(root / name, "SYN0001", seed=3, wells=96, size=64, workers=1, imager=name)
    return root


def test_imager_a_pixels_are_pinned(plates):
    digest = hashlib.sha256()
    for pixels in _pixels(plates / "A"):
        digest.update(pixels.tobytes())
    assert digest.hexdigest() == PIXELS_IMAGER_A
    assert "imager" not in json.loads((plates / "A" / "plate.json").read_text())


def test_imager_b_is_another_camera(plates):
    a, b = np.stack(_pixels(plates / "A")).astype(float), np.stack(_pixels(plates / "B")).astype(float)
    assert json.loads((plates / "B" / "plate.json").read_text())["imager"] == "B"
    # Dimmer and flatter: lower mean brightness and less spread on the same wells.
    assert b.mean() < a.mean() - 10
    assert b.std() < a.std()
    changed = {f for f in IMAGER_A.__dataclass_fields__ if f != "name" and getattr(IMAGER_A, f) != getattr(IMAGER_B, f)}
    assert {"interior", "rim", "drop_radius", "blur", "noise", "contrast", "tilt"} <= changed


def test_unknown_imager_is_refused(tmp_path):
    assert imager_named("b") is IMAGER_B
    with pytest.raises(ValueError, match="unknown imager 'C'"):
        write_plate(tmp_path / "C", "SYN0001", seed=3, wells=96, size=64, workers=1, imager="C")
    parser = __import__("argparse").ArgumentParser()
    demo_archive.add_arguments(parser)
    assert parser.parse_args(["--out", "x", "--imager", "b"]).imager == "B"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--imager", "C"])
