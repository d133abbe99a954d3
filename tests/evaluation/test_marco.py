"""MARCO's four classes in the evaluation: the metrics.json block and the report's confusion table."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from crystal_pipeline.classes import MARCO_CLASSES, MARCO_OF_CLASS
from crystal_pipeline.evaluation.calibration import apply_temperature
from crystal_pipeline.evaluation.marco import marco_confusion, marco_metrics
from crystal_pipeline.evaluation.report import evaluation_report


def test_marco_confusion_of_a_hand_built_case():
    # true: crystal (3), phase & crystal (7), precipitate & skin (6), clear (1), junk (10)
    class_ids = np.array([3, 7, 6, 1, 10])
    probs = np.zeros((5, 10))
    probs[0, [0, 2, 4]] = [0.4, 0.3, 0.3]  # ten-class says clear; crystals sum 0.6 -> crystals (right)
    probs[1, [1, 6]] = [0.7, 0.3]  # precipitate (wrong: true crystals)
    probs[2, [5, 8]] = [0.6, 0.4]  # precipitate (right)
    probs[3, [0]] = [1.0]  # clear (right)
    probs[4, [3, 9, 0]] = [0.3, 0.3, 0.4]  # other 0.6 -> other (right)
    expected = np.zeros((4, 4), dtype=int)
    for true, pred in (("crystals", "crystals"), ("crystals", "precipitate"), ("precipitate", "precipitate"),
                       ("clear", "clear"), ("other", "other")):
        expected[MARCO_CLASSES.index(true), MARCO_CLASSES.index(pred)] += 1
    np.testing.assert_array_equal(marco_confusion(probs, class_ids), expected)
    block = marco_metrics(probs, class_ids, n_resamples=200)
    assert block["accuracy"] == pytest.approx(0.8) and block["n_images"] == 5
    assert block["recall"]["crystals"] == pytest.approx(0.5) and block["recall"]["other"] == 1.0
    low, high = block["accuracy_ci95"]
    assert 0.0 <= low <= 0.8 <= high <= 1.0


def test_metrics_json_marco_block_and_report_table(tmp_path):
    rng = np.random.default_rng(7)
    y = rng.choice([1, 2, 3, 4, 5, 6, 9], size=300)
    logits = rng.normal(size=(300, 10))
    logits[np.arange(300), y - 1] += 1.5
    raw = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = evaluation_report(raw, y, model_name="CrystalNet v1", model_version="v1", split="test",
                               temperature=1.5, archive_description="toy", out_dir=tmp_path)
    stored = json.loads((tmp_path / "metrics.json").read_text())["marco"]
    calibrated = apply_temperature(raw, 1.5)
    four = np.stack([calibrated[:, [c - 1 for c, m in MARCO_OF_CLASS.items() if m == name]].sum(axis=1)
                     for name in MARCO_CLASSES], axis=1)
    truth = np.array([MARCO_CLASSES.index(MARCO_OF_CLASS[c]) for c in y])
    assert stored["accuracy"] == pytest.approx(skm.accuracy_score(truth, four.argmax(axis=1)))
    np.testing.assert_array_equal(stored["confusion"], skm.confusion_matrix(truth, four.argmax(axis=1),
                                                                           labels=range(4)))
    low, high = stored["accuracy_ci95"]
    assert low < stored["accuracy"] < high and high - low < 0.2
    assert report.metrics["marco_accuracy"] == pytest.approx(stored["accuracy"])
    assert "## MARCO's four classes" in report.markdown
    assert f"Overall: {stored['accuracy']:.4f}" in report.markdown
    assert report.tables["marco"][0] == ["Labels", "Crystals", "Precipitate", "Clear", "Other", "Total", "Recall"]
    assert "MARCO&#39;s four classes" in report.html or "MARCO's four classes" in report.html  # markupsafe's escape
