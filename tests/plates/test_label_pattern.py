"""`crystal-pipeline label` honours CRYSTAL_FILENAME_PATTERN: an imager's export folder named like
the real sample ``97wo_01A_1.jpg`` is a plate (97wo), and hits.csv names each row's well and drop."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch

from tests.real_samples import REAL_SAMPLES
from crystal_pipeline.cli import main
from crystal_pipeline.model import CrystalNet, save_artifact


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    net = CrystalNet(resolution=32).eval()
    path = tmp_path_factory.mktemp("models") / "v1" / "model.pt"
    return save_artifact(path, net, created_at="2026-11-25T00:00:00+00:00", preset="smoke", trained_on="synthetic")


def test_label_reads_drops_from_the_pattern_setting(tmp_path, model_path, monkeypatch, capsys):
    export = tmp_path / "export_2026_11"  # the folder's name is not the plate's
    export.mkdir()
    for drop in (1, 2, 3):
        shutil.copy(REAL_SAMPLES / f"dls_echo_97wo_01A_{drop}.jpg", export / f"97wo_01A_{drop}.jpg")
    shutil.copy(REAL_SAMPLES / "dls_echo_97wo_01A_1.jpg", export / "97wo_01B_x.jpg")  # does not parse
    monkeypatch.setenv("CRYSTAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", "plate_well_drop")
    assert main(["label", str(export), "--model", str(model_path), "--workers", "1"]) == 0
    out = tmp_path / "data" / "reports" / "plates" / "97wo"
    with open(out / "hits.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["drop"])
    assert [(r["image_id"], r["well"], r["drop"]) for r in rows] == \
        [("97wo/A01", "A01", "1"), ("97wo/A01_2", "A01", "2"), ("97wo/A01_3", "A01", "3")]
    with open(out / "quarantined.csv", newline="") as handle:
        [bad] = list(csv.DictReader(handle))
    assert bad["path"].endswith("97wo_01B_x.jpg") and "does not match" in bad["reason"]
    assert (out / "plate_map.png").stat().st_size > 1000
    # A 96-well plate (the smallest holding A01) with 3 drops per well, one well imaged: 95 x 3 drops missing.
    assert "285 missing well-drops (3 drops per well)" in capsys.readouterr().out
    # A mistyped pattern is one clear error, before any model work.
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", "(?P<plate>x")
    assert main(["label", str(export), "--model", str(model_path)]) == 2
    assert "not a regular expression" in capsys.readouterr().err
