"""Balanced accuracy, macro F1, the per-class table and metrics.json against scikit-learn and known answers."""

import json
import math

import numpy as np
import pytest
from sklearn import metrics as sk

from crystal_pipeline.classes import CLASS_NAMES
from crystal_pipeline.evaluation.metrics import balanced_accuracy, confusion_matrix, macro_f1
from crystal_pipeline.evaluation.results import (
    classifier_scores, comparison_entry, model_metrics, per_class, read_metrics_json, write_metrics_json)


def _sample(n=400, seed=0, skill=2.5, absent=(6, 9)):
    """Labels 1..10 (some classes absent) and probabilities that favour the true class."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(1, 11) if c not in absent]
    ids = rng.choice(present, size=n, p=np.linspace(3, 1, len(present)) / np.linspace(3, 1, len(present)).sum())
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), ids - 1] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return ids, probs


def test_balanced_accuracy_and_macro_f1_match_scikit_learn():
    ids, probs = _sample()
    predicted = probs.argmax(axis=1) + 1
    predicted[:5] = 6  # a class predicted but never true: in macro F1 (as 0), not in balanced accuracy
    confusion = confusion_matrix(ids, predicted)
    assert balanced_accuracy(confusion) == pytest.approx(sk.balanced_accuracy_score(ids, predicted))
    assert macro_f1(confusion) == pytest.approx(sk.f1_score(ids, predicted, average="macro", zero_division=0))
    assert math.isnan(balanced_accuracy(np.zeros((10, 10)))) and math.isnan(macro_f1(np.zeros((10, 10))))


def test_a_model_that_ignores_rare_classes_shows_in_balanced_accuracy_not_accuracy():
    ids = np.array([1] * 90 + [3] * 10)
    always_clear = np.ones_like(ids)
    confusion = confusion_matrix(ids, always_clear)
    assert (always_clear == ids).mean() == 0.9
    assert balanced_accuracy(confusion) == pytest.approx(0.5)


def test_per_class_table_matches_scikit_learn():
    ids, probs = _sample(seed=3)
    predicted = probs.argmax(axis=1) + 1
    table = per_class(probs, ids)
    labels = list(range(1, 11))
    recall = sk.recall_score(ids, predicted, labels=labels, average=None, zero_division=0)
    precision = sk.precision_score(ids, predicted, labels=labels, average=None, zero_division=0)
    for k, name in enumerate(CLASS_NAMES):
        row = table[name]
        assert row["support"] == int((ids == k + 1).sum())
        if row["support"] == 0:
            assert math.isnan(row["recall"]) and math.isnan(row["auc"])
            continue
        assert row["recall"] == pytest.approx(recall[k])
        assert row["auc"] == pytest.approx(sk.roc_auc_score(ids == k + 1, probs[:, k]))
        if (predicted == k + 1).any():
            assert row["precision"] == pytest.approx(precision[k])


def test_intervals_are_seeded_and_bracket_the_estimates():
    ids, probs = _sample(seed=5)
    a = classifier_scores(probs, ids, n_resamples=300)
    assert a == classifier_scores(probs, ids, n_resamples=300)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "crystal_auc"):
        low, high = a[f"{key}_ci95"]
        assert low <= a[key] <= high and high - low < 0.2, key
    assert classifier_scores(probs, ids, n_resamples=300, seed=1)["accuracy_ci95"] != a["accuracy_ci95"]


def test_model_metrics_scores_calibrated_probabilities_and_reports_ece_both_ways():
    ids, probs = _sample(seed=7, skill=1.5)
    sharp = probs ** 4 / (probs ** 4).sum(axis=1, keepdims=True)  # over-confident
    result = model_metrics(sharp, ids, model_version="v1", split="test", temperature=4.0, n_resamples=200)
    assert result["split"] == "test" and result["n_images"] == len(ids) and result["temperature"] == 4.0
    assert result["ece_after"] < result["ece_before"]
    # Temperature keeps the argmax: accuracy is that of the raw probabilities.
    assert result["accuracy"] == pytest.approx(((sharp.argmax(axis=1) + 1) == ids).mean())
    assert 0 < result["review_share_at_recall_target"] <= 1
    assert result["crystal_recall_achieved"] >= 0.95


def test_comparison_entry_carries_the_mcnemar_p_value():
    ids, probs = _sample(seed=11)
    worse = np.roll(probs, 1, axis=1)  # almost always wrong
    entry = comparison_entry(worse, probs, ids, n_resamples=100)
    assert entry["mcnemar_p_vs_crystalnet"] < 1e-6 and entry["only_crystalnet_right"] > entry["only_baseline_right"]
    same = comparison_entry(probs, probs, ids, n_resamples=100)
    assert same["mcnemar_p_vs_crystalnet"] == 1.0


def test_metrics_json_is_written_with_null_for_undefined_numbers(tmp_path):
    ids, probs = _sample(seed=2)
    result = model_metrics(probs, ids, model_version="v1", split="test", n_resamples=50)
    path = write_metrics_json(tmp_path, result)
    text = path.read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded == read_metrics_json(tmp_path)
    assert loaded["per_class"]["precipitate_skin"]["recall"] is None  # class 6 absent
    assert len(loaded["accuracy_ci95"]) == 2 and loaded["model_version"] == "v1"
