"""UV pictures of the synthetic archive: protein crystals bright, salt crystals dark."""

import numpy as np

from crystal_pipeline.ingest import archive
from crystal_pipeline.synthetic import contents, uv
from crystal_pipeline.synthetic.archive import write_plate
from crystal_pipeline.synthetic.render import render_well, render_well_uv
from crystal_pipeline.synthetic.scene import draw_nuisance, draw_scene


def _canvas(seed):
    rng = np.random.default_rng(seed)
    return contents.Canvas(draw_scene(rng, 128)), rng


def test_a_protein_crystal_is_brighter_in_uv_than_a_salt_crystal_and_both_show_in_white_light():
    canvas, rng = _canvas(3)
    contents.crystals(canvas, rng, 0.9)
    protein = np.asarray(canvas._array(contents.CRYSTAL_LAYERS[0])) > 0
    salt_rng = np.random.default_rng(5)
    while not uv.draw_salt(canvas, salt_rng):  # draw_salt draws in SALT_SHARE of the wells
        pass
    salt = (np.asarray(canvas._array(uv.SALT_LAYER)) > 0) & ~protein
    assert protein.sum() > 20 and salt.sum() > 20
    nuisance = draw_nuisance(rng, 0.2)
    picture = uv.render_uv(canvas, np.random.default_rng(1), nuisance).astype(float)
    clear_drop = (canvas.scene.inside > 0.9) & ~protein & ~salt
    assert picture[protein].mean() > 2 * picture[salt].mean()
    assert picture[salt].mean() < picture[clear_drop].mean() + 5  # salt blocks the drop's glow, it never glows
    visible = canvas.compose()
    background = np.median(visible[clear_drop])  # white light shows the salt as it shows crystals
    assert np.abs(visible[salt] - background).mean() > 0.1


def test_uv_draws_leave_the_visible_stream_alone_and_a_plate_gets_its_uv_pictures(tmp_path):
    for cid in (1, 3, 7):
        plain, truth = render_well(np.random.default_rng([0, 1, cid]), cid, 64)
        with_uv, uv_pixels, uv_truth = render_well_uv(np.random.default_rng([0, 1, cid]),
                                                      np.random.default_rng(9), cid, 64)
        assert uv_pixels.shape == plain.shape and uv_truth.class_id == truth.class_id == cid
        if uv_truth.salt == 0:  # without salt the white-light picture is the same bytes
            assert np.array_equal(plain, with_uv)
    write_plate(tmp_path / "P", "P", seed=1, wells=96, size=64, imager="A", workers=1, uv=True)
    files = archive.scan_plate(tmp_path / "P")
    assert sum(f.imaging == "uv" for f in files) == 96 and all(f.error is None for f in files)
