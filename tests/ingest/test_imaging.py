"""Decoding: every input the archive may hold becomes the same kind of square, or a reason."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from crystal_pipeline.ingest.imaging import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    UnreadableImage,
    decode_many,
    is_image_path,
    load_grey,
    load_grey_bytes,
    probe,
)

from tests.real_samples import REAL_SAMPLE_COUNT, REAL_SAMPLES  # noqa: E402


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random content: incompressible enough that a cut file really is cut."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    return np.clip(big.astype(np.int16) + rng.integers(-20, 21, (h, w)), 0, 255).astype(np.uint8)


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- bad input ---------------------------------------------------------------------------

def test_empty_file_is_unreadable(tmp_path):
    path = tmp_path / "A01.png"
    path.write_bytes(b"")
    with pytest.raises(UnreadableImage, match="^empty file$"):
        probe(path)
    with pytest.raises(UnreadableImage, match="^empty file$"):
        load_grey(path)


def test_text_named_png_is_unreadable(tmp_path):
    path = tmp_path / "A01.png"
    path.write_text("these are my notes, not a photograph\n")
    with pytest.raises(UnreadableImage) as err:
        probe(path)
    assert err.value.reason == "not an image: cannot identify image file"
    with pytest.raises(UnreadableImage, match="^not an image"):
        load_grey(path)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImage, match="^cannot read file"):
        probe(tmp_path / "gone.png")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_png_is_unreadable(tmp_path, keep):
    path = _truncate(_save(Image.fromarray(_noise(256, 256)), tmp_path / "A01.png"), keep)
    with pytest.raises(UnreadableImage, match="^truncated image$"):
        probe(path)
    with pytest.raises(UnreadableImage, match="^truncated image$"):
        load_grey(path)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.995])
def test_truncated_jpeg_is_unreadable_even_at_draft_scale(tmp_path, keep):
    # probe decodes JPEGs at 1/8 scale; the cut must still be noticed.
    rgb = np.stack([_noise(960, 1280, s) for s in range(3)], axis=-1)
    path = _truncate(_save(Image.fromarray(rgb), tmp_path / "A01.jpg", quality=90), keep)
    with pytest.raises(UnreadableImage, match="^truncated image$"):
        probe(path)
    with pytest.raises(UnreadableImage, match="^truncated image$"):
        load_grey(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_garbage_after_valid_header_is_unreadable(tmp_path):
    good = _save(Image.fromarray(_noise(64, 64)), tmp_path / "good.png").read_bytes()
    path = tmp_path / "A01.png"
    path.write_bytes(good[:60] + bytes(range(256)) * 8)
    with pytest.raises(UnreadableImage):
        probe(path)


def test_probe_reports_size_and_original_mode_and_leaves_file_alone(tmp_path):
    path = _save(Image.new("RGB", (300, 200), (10, 20, 30)), tmp_path / "A01.jpg")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    assert probe(path) == ImageInfo(width=300, height=200, mode="RGB")
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    p16 = _save(Image.fromarray(np.zeros((20, 30), np.uint16)), tmp_path / "B01.png")
    assert probe(p16) == ImageInfo(30, 20, "I;16")
    pal = _save(Image.new("P", (8, 8)), tmp_path / "C01.png")
    assert probe(pal).mode == "P"


def test_image_extensions():
    assert IMAGE_EXTENSIONS == frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
    assert is_image_path("plates/P1/A01.JPG") and is_image_path("x.Tiff")
    assert not is_image_path(".DS_Store") and not is_image_path("notes.txt")


# --- modes and values ---------------------------------------------------------------------

def test_known_grey_value_survives(tmp_path):
    path = _save(Image.new("L", (300, 200), 77), tmp_path / "A01.png")
    out = load_grey(path, 128)
    assert out.shape == (128, 128) and out.dtype == np.uint8
    assert (out == 77).all()
    assert out.flags.writeable


def test_same_size_square_is_returned_unchanged(tmp_path):
    pixels = _noise(64, 64)
    path = _save(Image.fromarray(pixels), tmp_path / "A01.png")
    np.testing.assert_array_equal(load_grey(path, 64), pixels)
    assert load_grey_bytes(path, 64) == pixels.tobytes()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gradient_maps_monotonically_onto_full_range(tmp_path, suffix):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (256, 1))
    path = _save(Image.fromarray(ramp), tmp_path / f"A01{suffix}")
    assert Image.open(path).mode.startswith("I;16")
    full = load_grey(path, 256)
    assert full.dtype == np.uint8 and full.min() == 0 and full.max() == 255
    assert (np.diff(full.astype(int), axis=1) >= 0).all()
    small = load_grey(path, 128)
    assert (np.diff(small.astype(int), axis=1) >= 0).all()
    assert small[:, 0].max() <= 2 and small[:, -1].min() >= 253


def test_12bit_data_in_16bit_container_is_stretched_not_darkened(tmp_path):
    ramp = np.tile(np.linspace(100, 4095, 200).astype(np.uint16), (200, 1))
    path = _save(Image.fromarray(ramp), tmp_path / "A01.tif")
    out = load_grey(path, 200)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) > 150  # grey levels kept, not 16 of them


def test_constant_16bit_image_uses_fixed_scale(tmp_path):
    path = _save(Image.fromarray(np.full((40, 40), 65535, np.uint16)), tmp_path / "A01.png")
    assert (load_grey(path, 32) == 255).all()
    path = _save(Image.fromarray(np.full((40, 40), 257 * 60, np.uint16)), tmp_path / "B01.png")
    assert (load_grey(path, 32) == 60).all()


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[:, :50] = (100, 100, 100, 255)      # opaque grey
    rgba[:, 50:] = (0, 0, 0, 0)              # transparent black: hidden colour must not show
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "A01.png")
    out = load_grey(path, 100)
    assert (out[:, :40] == 100).all()
    assert (out[:, 60:] == 255).all()
    half = np.zeros((10, 10, 4), np.uint8)
    half[...] = (0, 0, 0, 128)
    out = load_grey(_save(Image.fromarray(half, "RGBA"), tmp_path / "B01.png"), 10)
    assert (np.abs(out.astype(int) - 127) <= 1).all()


def test_palette_png_maps_through_its_palette(tmp_path):
    im = Image.new("P", (60, 60))
    palette = [0, 0, 0] * 256
    palette[3:6] = [200, 200, 200]
    im.putpalette(palette)
    im.paste(1, (0, 0, 60, 30))
    out = load_grey(_save(im, tmp_path / "A01.png"), 60)
    assert (out[:30] == 200).all() and (out[30:] == 0).all()


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (20, 20), 0)
    im.putpalette([50, 50, 50] + [0, 0, 0] * 255)
    im.paste(1, (0, 0, 10, 20))
    im.info["transparency"] = 1
    out = load_grey(_save(im, tmp_path / "A01.png", transparency=1), 20)
    assert (out[:, :10] == 255).all() and (out[:, 10:] == 50).all()


def test_cmyk_jpeg_loads_as_grey(tmp_path):
    cmyk = Image.new("CMYK", (200, 100), (0, 0, 0, 0))   # white
    cmyk.paste((0, 0, 0, 255), (100, 0, 200, 100))       # black on the right
    path = _save(cmyk, tmp_path / "A01.jpg", quality=95)
    assert probe(path).mode == "CMYK"
    out = load_grey(path, 50)
    assert out.shape == (50, 50) and out.dtype == np.uint8
    assert out[:, :20].min() >= 250 and out[:, 30:].max() <= 5


def test_rgb_jpeg_uses_luma(tmp_path):
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160] = (120, 120, 120)
    rgb[:, 160:] = (255, 0, 0)
    path = _save(Image.fromarray(rgb), tmp_path / "A01.jpeg", quality=95)
    out = load_grey(path, 64).astype(int)
    assert out.shape == (64, 64)
    assert np.abs(out[:, :20] - 120).max() <= 3
    assert np.abs(out[:, 44:] - round(0.299 * 255)).max() <= 4


def test_bmp_and_bilevel(tmp_path):
    out = load_grey(_save(Image.new("1", (40, 40), 1), tmp_path / "A01.bmp"), 16)
    assert (out == 255).all()


# --- geometry ----------------------------------------------------------------------------

@pytest.mark.parametrize("size,suffix", [((300, 200), ".png"), ((200, 300), ".png"),
                                         ((1280, 960), ".jpg"), ((2532, 2028), ".jpg")])
def test_central_crop_removes_the_long_sides_border(tmp_path, size, suffix):
    w, h = size
    side = min(w, h)
    a = np.zeros((h, w), np.uint8)                         # black margins on the long side
    left, top = (w - side) // 2, (h - side) // 2
    a[top:top + side, left:left + side] = 230              # the central square
    path = _save(Image.fromarray(a), tmp_path / f"A01{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
    out = load_grey(path, 128)
    assert out.min() >= 222, "border leaked into the crop"


def test_off_centre_mark_keeps_its_position(tmp_path):
    a = np.full((200, 300), 255, np.uint8)
    a[0:100, 50:150] = 0   # top-left quadrant of the central 200x200 square (x 50..250)
    out = load_grey(_save(Image.fromarray(a), tmp_path / "A01.png"), 100)
    assert out[:48, :48].max() < 5
    assert out[52:, :].min() > 250 and out[:, 52:].min() > 250


def test_fine_checkerboard_becomes_mid_grey_not_aliased(tmp_path):
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = load_grey(_save(Image.fromarray(board), tmp_path / "A01.png"), 128).astype(int)
    assert np.abs(out - 127.5).max() <= 3
    # a naive nearest-neighbour resize would give solid 0 or 255 here
    assert np.abs(np.asarray(Image.fromarray(board).resize((128, 128), Image.Resampling.NEAREST)).astype(int) - 127.5).min() > 100


def test_small_image_is_upscaled(tmp_path):
    out = load_grey(_save(Image.new("L", (40, 30), 90), tmp_path / "A01.png"), 128)
    assert out.shape == (128, 128) and (out == 90).all()


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    rgb = np.stack([_noise(960, 1280, s) for s in range(3)], axis=-1)
    path = _save(Image.fromarray(rgb), tmp_path / "A01.jpg", quality=92)
    full = Image.open(path).convert("L").crop((160, 0, 1120, 960))
    ref = np.asarray(full.convert("F").resize((128, 128), Image.Resampling.LANCZOS))
    diff = np.abs(load_grey(path, 128).astype(float) - ref)
    assert diff.mean() < 1.5 and diff.max() < 20


# --- real photographs --------------------------------------------------------------------

def _real_photos() -> list[Path]:
    return sorted(p for p in REAL_SAMPLES.iterdir() if is_image_path(p))


def test_all_real_photographs_load():
    photos = _real_photos()
    assert len(photos) == REAL_SAMPLE_COUNT
    for path in photos:
        with Image.open(path) as im:
            expected = ImageInfo(im.width, im.height, im.mode)
        assert probe(path) == expected
        out = load_grey(path, 128)
        assert out.shape == (128, 128) and out.dtype == np.uint8
        assert out.std() > 3, f"{path.name} came out blank"


def test_decode_many_in_parallel_keeps_order_and_reports_failures(tmp_path):
    paths = []
    for i in range(9):
        paths.append(_save(Image.fromarray(_noise(70 + i, 90, i)), tmp_path / f"img{i}.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    paths.insert(4, bad)
    results = list(decode_many(paths, 32, workers=2, chunksize=2))
    assert [i for i, _ in results] == list(range(10))
    assert isinstance(results[4][1], UnreadableImage) and results[4][1].reason == "empty file"
    for (i, arr), path in zip(results, paths):
        if i != 4:
            np.testing.assert_array_equal(arr, load_grey(path, 32))
    serial = list(decode_many(paths, 32, workers=1, as_bytes=True))
    assert serial[0][1] == load_grey(paths[0], 32).tobytes()


def test_decode_many_can_stop_early(tmp_path):
    paths = [_save(Image.new("L", (20, 20), i), tmp_path / f"{i}.png") for i in range(40)]
    it = decode_many(paths, 8, workers=2, chunksize=4)
    first = [next(it) for _ in range(3)]
    it.close()
    assert [int(a[0, 0]) for _, a in first] == [0, 1, 2]
