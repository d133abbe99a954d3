"""`crystal-pipeline label` beside a labels.csv of MARCO labels (as in tests/data/real_samples)."""

from __future__ import annotations

import csv

import numpy as np
import torch
from PIL import Image

from crystal_pipeline.cli import main
from crystal_pipeline.model import CrystalNet, save_artifact


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_label_writes_marco_outcome_beside_labels_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "samples"
    folder.mkdir()
    for name in ("gsk_1.jpeg", "gsk_2.jpeg", "dls_a.jpg", "unlabelled.png"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    (folder / "labels.csv").write_text(
        "file,marco_label,label_quality,source\n"
        "gsk_1.jpeg,crystals,human (MARCO ground truth),x\n"
        'gsk_2.jpeg,Clear,"human,\n matched by file name",x\n'
        "dls_a.jpg,crystals,weak (model output or file name),x\n"
        "unlabelled.png,,none,x\n"
        "missing.jpeg,other,human (MARCO ground truth),x\n")
    torch.manual_seed(1)
    net = CrystalNet(resolution=32).eval()
    with torch.no_grad():
        net.out.weight.mul_(30.0)
    model = save_artifact(tmp_path / "v1" / "model.pt", net, trained_on="synthetic")
    out = tmp_path / "report"
    assert main(["label", str(folder), "--model", str(model), "--out", str(out), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    predicted = {r["image_id"]: r["marco_class"] for r in _rows(out / "hits.csv")}
    rows = _rows(out / "marco_vs_labels.csv")
    assert [r["file"] for r in rows] == ["dls_a.jpg", "gsk_1.jpeg", "gsk_2.jpeg"]  # labelled images with a label
    assert [r["marco_label"] for r in rows] == ["crystals", "crystals", "clear"]
    assert all(r["predicted"] == predicted[r["file"]] for r in rows)
    assert all(r["agree"] == str(int(r["predicted"] == r["marco_label"])) for r in rows)
    assert all(abs(sum(float(r[f"p_{m}"]) for m in ("crystals", "precipitate", "clear", "other")) - 1) < 1e-3
               for r in rows)
    agree = sum(r["agree"] == "1" for r in rows)
    assert f"all {agree}/3" in printed and "not a target" in printed
    page = (out / "marco_vs_labels.md").read_text()
    assert "not a target" in page and "1 labelled images have no label; 1 labels name no labelled image" in page
    assert "| human, matched by file name |" in page
    # A labels file without the columns is ignored (with a warning when asked for by name).
    (tmp_path / "other.csv").write_text("file,class\ngsk_1.jpeg,3\n")
    assert main(["label", str(folder), "--model", str(model), "--out", str(tmp_path / "r2"), "--workers", "0",
                 "--marco-labels", str(tmp_path / "other.csv")]) == 0
    assert "no file,marco_label columns" in capsys.readouterr().err
    assert not (tmp_path / "r2" / "marco_vs_labels.csv").exists()
