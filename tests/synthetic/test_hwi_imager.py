"""Imager HWI (issue 17): a bright drop under oil on black in 4:3 frames, lit the same way across
a plate; the generator without scipy; imager A's bytes as they were."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystal_pipeline.ingest import imaging
from crystal_pipeline.synthetic import blur, write_archive, write_plate
from crystal_pipeline.synthetic.hwi import plate_lighting
from crystal_pipeline.synthetic.imager import IMAGER_HWI
from crystal_pipeline.synthetic.render_pool import plate_key

SEED, WELLS, SIZE, PLATES = 1, 96, 64, 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("hwi")
    write_archive(out, plates=PLATES, seed=SEED, wells=WELLS, size=SIZE, workers=1, imager="hwi")
    return out


def _levels(path: Path) -> tuple[float, float, float]:
    """Border mean (outer 6% of the height on every side), centre mean (central square of a
    quarter of the height) and the share of pixels brighter than midway between the two."""
    img = np.asarray(Image.open(path), dtype=np.float64)
    h, w = img.shape
    b = round(0.06 * h)
    ring = np.ones_like(img, bool)
    ring[b:-b, b:-b] = False
    border, centre = img[ring].mean(), img[h * 3 // 8:h * 5 // 8, w // 2 - h // 8:w // 2 + h // 8].mean()
    return border, centre, float((img > (border + centre) / 2).mean())


def _plate_levels(archive: Path) -> dict[str, np.ndarray]:
    return {d.name: np.array([_levels(p) for p in sorted(d.glob("*.png"))])
            for d in sorted((archive / "plates").iterdir())}


def test_hwi_frames_are_a_bright_drop_on_black_in_4_3(archive):
    pngs = sorted((archive / "plates").glob("*/*.png"))
    assert len(pngs) == PLATES * WELLS
    for path in pngs[::17]:
        width, height = Image.open(path).size
        assert height == SIZE and abs(width - SIZE * 4 / 3) <= 1
    levels = np.concatenate(list(_plate_levels(archive).values()))
    border = levels[:, 0].mean()
    # The drop's own light, in the wells whose drop holds nothing that dims it (clear).
    clear = [archive / "plates" / row["plate_id"] / f"{row['well']}.png"
             for row in csv.DictReader((archive / "synthetic_truth.csv").open()) if row["class_id"] == "1"]
    _, centre, drop_share = np.array([_levels(p) for p in clear]).mean(axis=0)
    assert 10 <= border <= 35  # HWI: about 20 of 255
    assert 120 <= centre <= 180  # about 150
    assert 0.3 <= drop_share <= 0.5  # the drop fills about 40% of the frame
    assert json.loads((archive / "plates" / "SYN0001" / "plate.json").read_text())["imager"] == "HWI"
    assert json.loads((archive / "synthetic_summary.json").read_text())["imager"] == "HWI"


def test_lighting_is_fixed_per_plate(archive):
    # The drawn parameters: one plate's are the same wherever they are drawn, another's differ.
    first, again = (plate_lighting(SEED, plate_key("SYN0001"), IMAGER_HWI) for _ in range(2))
    assert first == again != plate_lighting(SEED, plate_key("SYN0002"), IMAGER_HWI)
    # The pixels: the surround's level varies between plates far more than within one (one-way
    # ANOVA F of the images' border means; about 1 if every image had its own lighting).
    borders = [levels[:, 0] for levels in _plate_levels(archive).values()]
    grand = np.concatenate(borders).mean()
    between = sum(len(b) * (b.mean() - grand) ** 2 for b in borders) / (len(borders) - 1)
    within = sum(((b - b.mean()) ** 2).sum() for b in borders) / (sum(map(len, borders)) - len(borders))
    assert between / within > 20


def test_ingest_crops_the_central_square_of_a_hwi_frame(archive):
    path = archive / "plates" / "SYN0001" / "A01.png"
    info = imaging.probe(path)
    assert (info.width, info.height) == (round(SIZE * 4 / 3), SIZE)
    square = imaging.load_grey(path, 32)
    assert square.shape == (32, 32)
    frame = np.asarray(Image.open(path), dtype=np.float64)
    left = (info.width - info.height) // 2
    # The crop keeps the drop and cuts the dark sides (and the well walls in them).
    kept = frame[:, left:left + info.height]
    assert square.mean() == pytest.approx(kept.mean(), abs=3)
    assert square.mean() > frame.mean() + 10


# sha256 over every file of an imager-A plate that draws every content path (classes crystal,
# precipitate & crystal, precipitate & skin, phase & crystal, junk; seed 4, 96 wells, 128 px),
# as written by main at 04e2973, before contents learnt non-square frames and blur left scipy.
PLATE_IMAGER_A = "a49a4eccfc392bc0d13bc29b9a93b1fefdc73f5ec80e9747aced2312623f77e3"


def test_imager_a_plate_is_byte_identical_to_main(tmp_path):
    write_plate(tmp_path, "SYN0002", seed=4, wells=96, size=128, workers=1, class_mix={3: 1, 5: 1, 6: 1, 7: 1, 10: 1})
    digest = hashlib.sha256()
    for path in sorted(tmp_path.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    assert digest.hexdigest() == PLATE_IMAGER_A


def test_numpy_blur_is_scipy_bit_for_bit():
    from scipy import ndimage

    rng = np.random.default_rng(7)
    for trial in range(60):
        h, w = (int(n) for n in rng.integers(5, 90, 2))
        image = (rng.random((h, w)) ** 3).astype(np.float32)
        if trial % 2:
            image = (rng.random((h, w)) < 0.02).astype(np.float32)  # sparse grains, as precipitate draws
        sigma, truncate = float(rng.uniform(0.05, 5.0)), float(rng.choice([2.0, 2.5, 4.0]))
        assert np.array_equal(blur.numpy_gaussian_filter(image, sigma, truncate),
                              ndimage.gaussian_filter(image, sigma, truncate=truncate)), (h, w, sigma, truncate)


# As on the GPU box (tests/training/test_gpu_box_imports.py): these packages look uninstalled.
BLOCKED = ("scipy", "dagster", "duckdb", "pandas")
NO_SCIPY = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
from crystal_pipeline.cli import main
from crystal_pipeline.synthetic import blur
assert blur._ndimage is None
assert main(["demo-archive", "--out", sys.argv[1], "--plates", "1", "--wells", "{WELLS}", "--size", "{SIZE}",
             "--seed", "{SEED}", "--imager", "hwi", "--workers", "1"]) == 0
print(sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in {BLOCKED!r}))
"""


def test_generator_runs_without_scipy_and_writes_the_same_bytes(archive, tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_SCIPY, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    written = sorted((tmp_path / "plates" / "SYN0001").glob("*.png"))
    assert len(written) == WELLS
    # The numpy blur gives scipy's bytes: the plate equals the one written here with scipy.
    for path in written:
        assert path.read_bytes() == (archive / "plates" / "SYN0001" / path.name).read_bytes(), path.name


def test_each_hwi_plate_has_its_own_mix_around_the_archive_s():
    """One protein per plate: plates' class mixes differ, their mean is the archive's mix,
    and an imager without a plate-mix concentration (A) draws the archive's mix itself."""
    from crystal_pipeline.synthetic.class_mix import normalize_mix, plate_mix

    mix = normalize_mix(None, "HWI")
    draws = np.array([[plate_mix(0, key, mix, 10.0).get(c, 0.0) for c in sorted(mix)] for key in range(400)])
    target = np.array([mix[c] for c in sorted(mix)])
    assert np.abs(draws.mean(axis=0) - target).max() < 0.02
    assert draws[:, 0].std() > 0.08  # clear's share strays by about 0.14 per plate at 10
    assert plate_mix(0, 5, mix, None) == mix
    assert plate_mix(0, 5, mix, 10.0) == plate_mix(0, 5, mix, 10.0)
    with pytest.raises(ValueError):
        plate_mix(0, 5, mix, 0.0)


def test_hwi_precipitate_dims_the_drop_and_size_defaults_to_128(tmp_path):
    """Fine grains scatter light out of the objective (``Scene.turbidity``): under the oil
    lighting a precipitate drop is darker than a clear one, as on HWI's plates, at the
    size the twin is calibrated at, which is imager HWI's default."""
    from crystal_pipeline.synthetic.archive import archive_settings
    from crystal_pipeline.synthetic.render import render_well

    light = plate_lighting(0, plate_key("SYN0001"), IMAGER_HWI)
    centre = {}
    for class_id in (1, 2):
        means = []
        for j in range(12):
            image, _ = render_well(np.random.default_rng([7, class_id, j]), class_id, IMAGER_HWI.default_size,
                                   imager=IMAGER_HWI, lighting=light)
            h, w = image.shape
            means.append(image[h // 4:3 * h // 4, (w - h) // 2 + h // 4:(w + h) // 2 - h // 4].mean())
        centre[class_id] = float(np.median(means))
    assert centre[2] < centre[1] - 25, centre
    out = tmp_path / "raw"
    write_archive(out, plates=1, wells=96, workers=1, imager="hwi")
    assert Image.open(out / "plates" / "SYN0001" / "A01.png").size == (171, 128)
    assert archive_settings(out) == {"imager": "HWI", "size": 128, "difficulty": 0.5}
    assert archive_settings(tmp_path / "nothing")["imager"] == "A"
