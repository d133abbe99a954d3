"""label_plate accounts for every file and well; the label CLI on real and plate folders."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crystal_pipeline.ingest.archive import scan_plate
from crystal_pipeline.classes import CLASS_NAMES, MARCO_CLASSES, marco_probs
from crystal_pipeline.plates.labelling import PlateLabels, label_plate, missing_wells
from crystal_pipeline.evaluation.metrics import crystal_probability
from crystal_pipeline.model import CrystalNet, predict_proba, save_artifact

from tests.real_samples import REAL_SAMPLE_COUNT, REAL_SAMPLES

RES = 64


@pytest.fixture(scope="module")
def plate_96(tmp_path_factory) -> Path:
    """A 96-well synthetic plate with one corrupt file (B03) and one well missing (H12)."""
    from crystal_pipeline.synthetic import write_plate

    plate_dir = tmp_path_factory.mktemp("incoming") / "P1"
    write_plate(plate_dir, "P1", seed=3, wells=96, size=64, workers=1)
    (plate_dir / "B03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (plate_dir / "H12.png").unlink()
    (plate_dir / "notes.txt").write_text("not an image: ignored")
    return plate_dir


@pytest.fixture(scope="module")
def model() -> CrystalNet:
    torch.manual_seed(0)
    net = CrystalNet(resolution=RES).eval()
    with torch.no_grad():
        net.out.weight.mul_(300.0)  # peaked probabilities, so the ranking means something
    return net


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, model) -> Path:
    """An artifact in DESIGN's model.pt format, written by the writer training uses."""
    path = tmp_path_factory.mktemp("models") / "v1" / "model.pt"
    return save_artifact(path, model, created_at="2026-11-24T00:00:00+00:00", preset="smoke", trained_on="synthetic")


def test_label_plate_accounts_for_every_file_and_well(plate_96, model):
    files = scan_plate(plate_96)
    assert len(files) == 95
    seen = []
    # fp32 pinned: the probabilities are compared with the model's own fp32 forward pass (auto
    # picks bf16 on a CPU with bf16 units; tests/plates/test_precision_labelling.py covers that)
    labels = label_plate(files, model, batch_size=16, workers=2, precision="fp32",
                         progress=lambda d, t: seen.append((d, t)))
    assert isinstance(labels, PlateLabels)
    assert len(labels.rows) + len(labels.quarantined) == len(files) == labels.files
    assert [q.well for q in labels.quarantined] == ["B03"]
    assert "B03.png" in str(labels.quarantined[0].path) and labels.quarantined[0].reason
    assert missing_wells(files, 96) == ["H12"] and missing_wells(files) == ["H12"]
    labelled_wells = [r.well for r in labels.rows]
    assert len(labelled_wells) + 1 + 1 == 96 and len(set(labelled_wells)) == 94
    # Input order kept; and the same numbers the eager model gives for those pixels.
    assert labelled_wells == [f.well for f in files if f.well != "B03"]
    from crystal_pipeline.ingest.imaging import load_grey

    pixels = np.stack([load_grey(r.path, RES) for r in labels.rows])
    expected = predict_proba(model, pixels)
    assert np.abs(labels.probs - expected).max() < 1e-4
    assert [r.class_id for r in labels.rows] == list(expected.argmax(1) + 1)
    np.testing.assert_allclose([r.crystal_prob for r in labels.rows], crystal_probability(expected), atol=1e-4)
    assert all(r.class_name == CLASS_NAMES[r.class_id - 1] for r in labels.rows)
    assert seen[-1] == (95, 95) and labels.timings.images == 94 and labels.timings.images_per_s > 0
    rows = labels.prediction_rows("v1", dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc))
    assert rows[0]["plate_id"] == "P1" and len(rows[0]["probs"]) == 10 and rows[0]["model_version"] == "v1"
    four = marco_probs(expected).argmax(1)  # MARCO: the arg-max of the four sums, per row
    assert [row["marco_class"] for row in rows] == [MARCO_CLASSES[i] for i in four]


def test_archive_errors_are_quarantined_without_decoding(tmp_path, model):
    from PIL import Image

    plate = tmp_path / "P2"
    plate.mkdir()
    for name in ("A01", "a1", "Z99"):  # a duplicate well and a well on no plate
        Image.fromarray(np.full((40, 40), 128, np.uint8)).save(plate / f"{name}.png")
    files = scan_plate(plate)
    labels = label_plate(files, model, batch_size=4, workers=0)
    assert len(labels.rows) == 1 and len(labels.quarantined) == 2
    assert {q.reason.split(":")[0] for q in labels.quarantined} == {"duplicate file for well A01 (already A01.png)",
                                                                   "unknown well name"}


def test_empty_plate(model):
    labels = label_plate([], model)
    assert labels.rows == [] and labels.quarantined == [] and labels.probs.shape == (0, 10)


def _run_cli(*argv: str) -> int:
    from crystal_pipeline.cli import main

    return main(["label", *argv])


def test_cli_labels_a_plate_folder(plate_96, model_path, tmp_path, capsys):
    out = tmp_path / "report"
    assert _run_cli(str(plate_96), "--model", str(model_path), "--out", str(out), "--batch-size", "32",
                    "--threshold", "0.3") == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and str(out) in printed
    with open(out / "hits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 94
    assert (out / "plate_map.png").stat().st_size > 1000 and (out / "report.html").is_file()


def test_cli_labels_loose_real_images(model_path, tmp_path, capsys):
    out = tmp_path / "real"
    # In a fresh interpreter, to prove the command needs neither Dagster nor DuckDB.
    code = ("import sys; from crystal_pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print('heavy:', sorted(m for m in ('dagster', 'duckdb') if m in sys.modules)); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "label", str(REAL_SAMPLES), "--model", str(model_path),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout and "images/s" in done.stdout
    with open(out / "hits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    n_images = len([p for p in REAL_SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")])
    assert len(rows) == n_images == REAL_SAMPLE_COUNT
    assert {r["image_id"] for r in rows} >= {"gsk_10.jpeg", "dls_echo_97wo_01A_1.jpg"}
    probs = [float(r["crystal_prob"]) for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert not (out / "plate_map.png").exists()  # names are not wells: no grid to draw
    assert "gsk_10.jpeg" in (out / "report.html").read_text()


def test_cli_missing_model_is_one_clear_error(plate_96, tmp_path, capsys):
    missing = tmp_path / "no" / "model.pt"
    assert _run_cli(str(plate_96), "--model", str(missing), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
