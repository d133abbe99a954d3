"""The portable model: ONNX export with its card, and labelling through ONNX Runtime equal to torch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crystal_pipeline.classes import CLASS_NAMES, MARCO_OF_CLASS
from crystal_pipeline.cli import main
from crystal_pipeline.files import file_sha256
from crystal_pipeline.ingest import imaging
from crystal_pipeline.ingest.archive import scan_plate
from crystal_pipeline.model import CrystalNet, load, save_artifact
from crystal_pipeline.model.model_card import CARD_METADATA_KEY
from crystal_pipeline.model.onnx_engine import OnnxCrystalNet
from crystal_pipeline.model.onnx_export import export_onnx
from crystal_pipeline.plates.labelling import label_plate

RES = 64
TEMPERATURE = 1.7
THRESHOLD = 0.3
METRICS = {
    "model_version": "v1", "split": "test", "n_images": 570, "accuracy": 0.6877, "accuracy_ci95": [0.6491, 0.7263],
    "crystal_auc": 0.8014, "crystal_auc_ci95": [0.7557, 0.8443], "macro_f1": float("nan"),
    "marco": {"accuracy": 0.81, "accuracy_ci95": [0.78, 0.84], "n_images": 570},
}


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    from crystal_pipeline.synthetic import write_plate

    plate_dir = tmp_path_factory.mktemp("incoming") / "P1"
    write_plate(plate_dir, "P1", seed=3, wells=96, size=64, workers=1)
    return plate_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory, plate):
    """A calibrated artifact (stats from the plate, T = 1.7) and its ONNX export."""
    files = scan_plate(plate)
    pixels = np.stack([p for _, p in imaging.decode_many([f.path for f in files], RES, 0)])
    torch.manual_seed(0)
    net = CrystalNet(resolution=RES).eval()
    net.set_normalization(pixels.mean(axis=0), pixels.std(axis=0))
    with torch.no_grad():
        net.out.weight.mul_(3.0)  # probabilities spread (top class 0.26 to 0.9), not saturated
    folder = tmp_path_factory.mktemp("models") / "v1"
    path = save_artifact(folder / "model.pt", net, created_at="2026-11-25T00:00:00+00:00", preset="smoke",
                         trained_on="synthetic", tensors_fingerprint="abc123", temperature=TEMPERATURE,
                         crystal_threshold=THRESHOLD)
    return path, export_onnx(path, folder / "model.onnx", metrics=METRICS, model_version="v1")


def test_onnx_probabilities_equal_torch_on_a_plate(plate, exported):
    artifact, result = exported
    files = scan_plate(plate)
    # fp32 pinned on the torch side: ONNX runs fp32, and auto picks bf16 on a CPU with bf16 units
    torch_fast = label_plate(files, load(artifact, "cpu"), batch_size=32, workers=0, precision="fp32")
    torch_eager = label_plate(files, load(artifact, "cpu"), batch_size=32, workers=0, cpu_path="eager",
                              precision="fp32")
    onnx = label_plate(files, OnnxCrystalNet(result.onnx_path), batch_size=32, workers=0)
    assert onnx.timings.path == "onnxruntime" and len(onnx.rows) == len(files) == 96
    assert 0.15 < onnx.probs.max(axis=1).min() and onnx.probs.max(axis=1).max() < 0.999  # a meaningful comparison
    assert np.abs(onnx.probs - torch_fast.probs).max() <= 1e-4
    assert np.abs(onnx.probs - torch_eager.probs).max() <= 1e-4
    assert [r.class_id for r in onnx.rows] == [r.class_id for r in torch_eager.rows]
    np.testing.assert_allclose([r.crystal_prob for r in onnx.rows], [r.crystal_prob for r in torch_eager.rows],
                               atol=1e-4)
    # The temperature is inside the graph exactly once: the uncalibrated softmax differs.
    net = load(artifact, "cpu")
    net.artifact_meta.pop("temperature")
    raw = label_plate(files, net, batch_size=32, workers=0, precision="fp32")
    assert np.abs(onnx.probs - raw.probs).max() > 1e-2


def test_model_card_json_markdown_and_embedded(exported):
    artifact, result = exported
    card = json.loads(result.card_json.read_text())
    assert card == result.card
    assert card["model_version"] == "v1" and card["resolution"] == RES
    assert [c["name"] for c in card["classes"]] == list(CLASS_NAMES)
    assert {c["id"]: c["marco"] for c in card["classes"]} == MARCO_OF_CLASS
    assert card["input"]["shape"] == ["N", RES, RES] and card["input"]["dtype"] == "uint8"
    assert card["calibration"] == {"temperature": TEMPERATURE, "crystal_threshold": THRESHOLD}
    data = card["training_data"]
    assert data["trained_on"] == "synthetic" and data["tensors_fingerprint"] == "abc123" and data["warning"]
    assert card["source_artifact"]["sha256"] == file_sha256(artifact)
    metrics = card["metrics"]
    assert metrics["accuracy"] == {"value": 0.6877, "ci95": [0.6491, 0.7263]}
    assert metrics["crystal_auc"]["ci95"] == [0.7557, 0.8443]
    assert metrics["macro_f1"]["value"] is None  # NaN is not JSON
    assert metrics["marco"]["accuracy_ci95"] == [0.78, 0.84]
    assert card["exported"]["max_abs_diff_vs_torch"] <= 1e-4
    text = result.card_md.read_text()
    assert "0.688 (95% CI 0.649 to 0.726)" in text and "MARCO four-class accuracy" in text
    assert "synthetic" in text and "| 4 | 5 | Precipitate & Crystal | crystals |" in text
    # The ONNX file carries the same card, so it labels on its own.
    engine = OnnxCrystalNet(result.onnx_path)
    assert engine.card == card and engine.resolution == RES
    assert engine.session.get_modelmeta().custom_metadata_map[CARD_METADATA_KEY]
    assert engine.artifact_meta["crystal_threshold"] == THRESHOLD


def _hits(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["image_id"]: row for row in csv.DictReader(fh)}


def test_cli_export_then_label_with_onnx_engine(plate, exported, tmp_path, monkeypatch, capsys):
    artifact, _ = exported
    monkeypatch.setenv("CRYSTAL_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "exported" / "crystalnet.onnx"
    assert main(["export", "--model", str(artifact), "--format", "onnx", "--out", str(out)]) == 0
    assert "no evaluation metrics found" in capsys.readouterr().out
    assert json.loads(out.with_name("crystalnet.card.json").read_text())["metrics"] is None
    assert main(["label", str(plate), "--model", str(artifact), "--out", str(tmp_path / "t"), "--workers", "0",
                 "--precision", "fp32"]) == 0  # ONNX is fp32; auto would pick bf16 on a CPU with bf16 units
    assert main(["label", str(plate), "--model", str(out), "--engine", "onnx", "--out", str(tmp_path / "o"),
                 "--workers", "0"]) == 0
    torch_rows, onnx_rows = _hits(tmp_path / "t" / "hits.csv"), _hits(tmp_path / "o" / "hits.csv")
    assert torch_rows.keys() == onnx_rows.keys() and len(onnx_rows) == 96
    for key, row in onnx_rows.items():
        assert abs(float(row["crystal_prob"]) - float(torch_rows[key]["crystal_prob"])) <= 1e-4
        assert row["hit"] == torch_rows[key]["hit"]  # same threshold, read from the card
    assert "v1" in (tmp_path / "o" / "report.md").read_text()
    assert main(["label", str(plate), "--model", str(artifact), "--engine", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "cannot open ONNX model" in capsys.readouterr().err


def test_without_onnx_libraries_both_commands_fail_with_one_clear_line(plate, exported, tmp_path):
    """The [onnx] extra is optional: without it, export and --engine onnx say what to install."""
    import subprocess
    import sys

    artifact, result = exported
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxruntime', 'onnxscript'):\n"
        "    sys.modules[name] = None\n"
        "from crystal_pipeline.cli import main\n"
        f"rc1 = main(['export', '--model', {str(artifact)!r}, '--out', {str(tmp_path / 'm.onnx')!r}])\n"
        f"rc2 = main(['label', {str(plate)!r}, '--model', {str(result.onnx_path)!r}, '--engine', 'onnx',"
        f" '--out', {str(tmp_path / 'r')!r}])\n"
        "sys.exit(10 * rc1 + rc2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 22, done.stderr[-2000:]
    assert "ONNX export needs onnx: pip install 'crystal_pipeline[onnx]'" in done.stderr
    assert "--engine onnx needs onnxruntime" in done.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "r").exists()
