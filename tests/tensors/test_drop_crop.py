"""``preprocessing.crop``: the paper's central square or a square around the located drop,
recorded in the tensors and their fingerprint, so tensors are rewritten when it changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from crystal_pipeline import tensors
from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.consensus import ConsensusConfig, agree
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.ingest.imaging import load_grey
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.ingest.drop_locator import ellipse_mask
from crystal_pipeline.tensors import preparation
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import labels as label_table


def _off_centre_drop(path, cx: float, seed: int = 0):
    """A 4:3 frame (160 x 120), a lit drop of radius 34 px left of the central square's edge."""
    drop = ellipse_mask((120, 160), cx, 60.0, 34.0, 31.0, 0.3)
    img = np.where(drop, 160.0, 15.0) + np.random.default_rng(seed).normal(0, 3, drop.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def _edge_max(square: np.ndarray) -> int:
    return int(max(square[0].max(), square[-1].max(), square[:, 0].max(), square[:, -1].max()))


def test_crop_drop_keeps_an_off_centre_drop_whole_where_the_central_square_cuts_it(tmp_path):
    path = tmp_path / "drop.png"
    _off_centre_drop(path, cx=42.0)  # the central square spans x 20..140; the drop 8..76
    centre, drop = load_grey(path, 64), load_grey(path, 64, crop="drop")
    assert _edge_max(centre) > 120  # the drop runs off the central square's left edge
    assert _edge_max(drop) < 60  # dark surround all round: the whole drop is inside
    bright = (drop > 90).mean()
    assert 0.45 < bright < 0.75  # the drop fills the square (pi/4 of a circle's box, less its margin)


def test_the_crop_is_in_the_tensors_and_their_fingerprint_and_a_change_rewrites_them(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    wells = [f"A{c:02d}" for c in range(1, 7)]
    for i, well in enumerate(wells):
        _off_centre_drop(raw / "plates" / "P1" / f"{well}.png", cx=36.0 + 3 * i, seed=i)  # all cut by the central square (x 20..140)
    (raw / "plates" / "P1" / "plate.json").write_text('{"format": 96}')
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(raw))
    labels = agree([(f"P1/{w}", ("clear",)) for w in wells], ConsensusConfig(), image_table.image_statuses(wh))
    label_table.replace_consensus_labels(wh, pd.DataFrame([vars(l) for l in labels.labels]))
    layout = DataLayout.under(tmp_path / "data")
    writes = []
    real = preparation.prepare_resolution
    monkeypatch.setattr(preparation, "prepare_resolution", lambda *a, **k: writes.append(k.get("crop")) or real(*a, **k))

    def everything(crop):
        splits = {s: preparation.current_split(wh, layout, 32, s, workers=1, crop=crop) for s in tensors.SPLITS}
        on_disk = tensors.fingerprint([layout.tensors_split_dir(32, s) for s in tensors.SPLITS])
        return splits, on_disk

    centre, centre_fp = everything("centre")
    again, _ = everything("centre")
    drop, drop_fp = everything("drop")
    assert writes == ["centre", "drop"]  # rewritten when the crop changed, not on every read
    assert {s.crop for s in drop.values()} == {"drop"} and {s.crop for s in centre.values()} == {"centre"}
    assert drop_fp != centre_fp
    assert drop_fp == tensors.fingerprint_splits(drop) and centre_fp == tensors.fingerprint_splits(centre)
    assert tensors.split_crop(layout.tensors_split_dir(32, "train")) == "drop"
    both = [(c, d) for name in tensors.SPLITS for c, d in zip(centre[name].pixels, drop[name].pixels)]
    assert both and all(_edge_max(d) < _edge_max(c) for c, d in both)


def test_labelling_cuts_the_square_the_model_was_trained_on(tmp_path, monkeypatch):
    import torch

    from crystal_pipeline.ingest import imaging
    from crystal_pipeline.ingest.archive import scan_plate
    from crystal_pipeline.model import CrystalNet, load, save_artifact
    from crystal_pipeline.plates.labelling import label_plate

    for i, well in enumerate(("A01", "A02")):
        _off_centre_drop(tmp_path / "P1" / f"{well}.png", cx=38.0 + 4 * i, seed=i)
    torch.manual_seed(0)
    seen = []
    real = imaging.decode_threaded
    monkeypatch.setattr(imaging, "decode_threaded", lambda *a, **k: seen.append(k.get("crop")) or real(*a, **k))
    for crop in ("drop", None):  # None: an artifact from before the setting
        meta = {"crop": crop} if crop else {}
        path = save_artifact(tmp_path / f"{crop}.pt", CrystalNet(resolution=32).eval(), preset="smoke",
                             trained_on="synthetic", **meta)
        labels = label_plate(scan_plate(tmp_path / "P1"), load(path, "cpu"), workers=1, cpu_path="eager")
        assert len(labels.rows) == 2
    assert seen == ["drop", "centre"]
