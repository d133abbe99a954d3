"""Evaluation metrics against hand-computed cases and scikit-learn; the paper's tables; the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from crystal_pipeline.classes import CLASS_IDS, CLASS_TITLES, has_crystal
from crystal_pipeline.evaluation import (
    CRYSTAL_COLUMNS,
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TABLE4,
    PAPER_TABLE5,
    binary_auc,
    confusion_grid,
    confusion_matrix,
    confusion_metrics,
    crystal_confusion,
    crystal_probability,
    evaluation_report,
    markdown_table,
    one_vs_rest_auc,
    resolution_grid,
    review_share_at_recall,
    threshold_for_recall,
)


def _one_hot_probs(predicted_ids, k=10):
    probs = np.full((len(predicted_ids), k), 0.01)
    probs[np.arange(len(predicted_ids)), np.asarray(predicted_ids) - 1] = 0.91
    return probs


def test_crystal_columns_are_the_crystal_classes_zero_based():
    # The one 0-based crystal set (classes.CRYSTAL_COLUMNS, re-exported by evaluation) that
    # crystal_prob, the plate labels and the metrics all sum over.
    assert CRYSTAL_COLUMNS == (2, 4, 6)
    assert [c + 1 for c in CRYSTAL_COLUMNS] == [c for c in CLASS_IDS if has_crystal(c)]
    probs = np.eye(10)
    assert list(crystal_probability(probs)) == [float(has_crystal(c)) for c in CLASS_IDS]


def test_confusion_metrics_hand_computed():
    confusion = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
    m = confusion_metrics(confusion)
    assert set(m) >= {"recall", "precision", "accuracy"}
    np.testing.assert_allclose(m["recall"][:2], [0.75, 0.5])
    np.testing.assert_allclose(m["precision"][:2], [0.6, 2 / 3])
    assert math.isnan(m["recall"][2])  # no true sample of class 3: undefined
    assert math.isnan(m["precision"][2])  # never predicted: undefined
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert isinstance(m["accuracy"], float)
    assert math.isnan(confusion_metrics(np.zeros((2, 2)))["accuracy"])


def test_confusion_matrix_and_metrics_match_sklearn_with_absent_classes():
    rng = np.random.default_rng(3)
    y_true = rng.choice([1, 2, 3, 5, 9], size=400)  # classes 4, 6, 7, 8, 10 never true
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.choice([1, 2, 3, 4], size=400))
    labels = np.arange(1, 11)
    confusion = confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(confusion, skm.confusion_matrix(y_true, y_pred, labels=labels))
    m = confusion_metrics(confusion)
    precision, recall, _, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan)
    np.testing.assert_allclose(m["recall"], recall, equal_nan=True)
    np.testing.assert_allclose(m["precision"], precision, equal_nan=True)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert np.isnan(m["recall"][support == 0]).all()
    never_predicted = ~np.isin(labels, y_pred)
    assert never_predicted.any() and np.isnan(m["precision"][never_predicted]).all()


def test_confusion_matrix_rejects_ids_outside_range():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [1, 1])
    with pytest.raises(ValueError):
        confusion_matrix([1, 11], [1, 1])


def test_auc_matches_sklearn_including_ties_and_undefined_classes():
    rng = np.random.default_rng(5)
    y = rng.choice([1, 2, 3, 4], size=300)  # classes 5..10 have no positives
    probs = rng.random((300, 10))
    probs[:, :4] += np.eye(4)[y - 1] * rng.random((300, 1))
    probs = np.round(probs, 1)  # ties
    auc = one_vs_rest_auc(probs, y)
    for k in range(4):
        assert auc[k] == pytest.approx(skm.roc_auc_score(y == k + 1, probs[:, k]))
    assert np.isnan(auc[4:]).all()
    assert math.isnan(binary_auc(np.ones(5, bool), np.arange(5)))  # no negatives
    assert binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_crystal_view_uses_classes_3_5_7():
    y = np.array([3, 5, 7, 1, 2, 3])
    predicted = np.array([5, 1, 7, 3, 2, 3])  # crystal->crystal twice, miss, false alarm
    probs = _one_hot_probs(predicted)
    assert crystal_probability(probs)[0] == pytest.approx(0.91 + 0.02)
    np.testing.assert_array_equal(crystal_confusion(y, probs), [[1, 1], [1, 3]])


def test_review_share_hand_computed_and_monotonic():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    prob = np.array([0.9, 0.8, 0.5, 0.2, 0.85, 0.6, 0.3, 0.1, 0.05, 0.0])
    assert threshold_for_recall(truth, prob, 0.75) == 0.5
    threshold, share, achieved = review_share_at_recall(truth, prob, 0.75)
    assert (threshold, share, achieved) == (0.5, 0.5, 0.75)  # 0.9 .85 .8 .6 .5 flagged
    assert review_share_at_recall(truth, prob, 1.0) == (0.2, 0.7, 1.0)  # adds .3 and .2

    rng = np.random.default_rng(0)
    truth = rng.random(2000) < 0.2
    prob = np.clip(rng.normal(0.3 + 0.4 * truth, 0.2), 0, 1)
    shares = [review_share_at_recall(truth, prob, r)[1] for r in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)]
    assert shares == sorted(shares) and shares[0] < shares[-1]
    for r in (0.5, 0.95, 0.99):
        assert review_share_at_recall(truth, prob, r)[2] >= r
    assert all(math.isnan(v) for v in review_share_at_recall(np.zeros(4, bool), np.ones(4)))


def test_paper_table2_is_self_consistent():
    counts = PAPER_TABLE2["counts"]
    np.testing.assert_array_equal(counts.sum(axis=1), PAPER_TABLE2["row_totals"])
    np.testing.assert_array_equal(counts.sum(axis=0), PAPER_TABLE2["column_totals"])
    assert counts.sum() == PAPER_TABLE2["total"] == 17033
    m = confusion_metrics(counts)
    assert round(m["accuracy"], 4) == PAPER_TABLE2["accuracy"] == 0.9080
    np.testing.assert_allclose(m["recall"], PAPER_TABLE2["recall"], atol=6e-5)
    np.testing.assert_allclose(m["precision"], PAPER_TABLE2["precision"], atol=6e-5)
    # Table 4 is Table 2 folded into crystal (3, 5, 7) and the rest, up to 2 images the
    # paper itself moved (its fold gives 13828/82/504/2619); the row totals agree exactly.
    crystal = np.isin(np.arange(1, 11), [3, 5, 7])
    folded = np.array([[counts[~crystal][:, ~crystal].sum(), counts[~crystal][:, crystal].sum()],
                       [counts[crystal][:, ~crystal].sum(), counts[crystal][:, crystal].sum()]])
    np.testing.assert_array_equal(folded.sum(axis=1), PAPER_TABLE4["counts"].sum(axis=1))
    assert np.abs(folded - PAPER_TABLE4["counts"]).max() == 2
    m4 = confusion_metrics(PAPER_TABLE4["counts"])
    np.testing.assert_allclose(m4["recall"], PAPER_TABLE4["recall"], atol=6e-5)
    np.testing.assert_allclose(m4["precision"], PAPER_TABLE4["precision"], atol=6e-5)
    assert round(m4["accuracy"], 4) == PAPER_TABLE4["accuracy"]
    assert PAPER_TABLE3[128] == (90.8, 300.0) and PAPER_TABLE5["RF"] == (82.8, 209.0)


def test_table2_rendering_has_titles_totals_and_paper_numbers():
    text = markdown_table(confusion_grid(PAPER_TABLE2["counts"], auc=PAPER_TABLE2["auc"]))
    for title in CLASS_TITLES:
        assert f"| {title} |" in text
    for needle in ("| Total |", "| Recall |", "| Precision |", "| AUC |", "Overall: 0.9080",
                   "| 5831 |", "| 17033 |", "| 0.3995 |", "| 0.6653 |", "| 0.9975 |"):
        assert needle in text, needle


def test_undefined_values_render_as_dash():
    text = markdown_table(confusion_grid(np.array([[2, 0], [0, 0]]), ["a", "b"], auc=[np.nan, None]))
    assert "| b | 0 | 0 | 0 | – |" in text
    assert "| AUC | – | – |" in text
    assert "nan" not in text.lower()
    assert "| 128×128 | 90.8 | 300 | – | – |" in markdown_table(resolution_grid())


def test_evaluation_report_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.choice([1, 2, 3, 4, 5, 6, 7, 9], size=300)  # 8 and 10 absent: AUC undefined
    probs = rng.random((300, 10))
    probs[np.arange(300), y - 1] += 1.5 * rng.random(300)
    probs /= probs.sum(axis=1, keepdims=True)
    report = evaluation_report(
        probs, y, model_name="CrystalNet", archive_description="synthetic test archive",
        first_layer_weights=rng.normal(size=(64, 1, 5, 5)), extra_models={"RF": rng.random((300, 10))},
        out_dir=tmp_path / "rep")

    for key in ("accuracy", "crystal_auc", "crystal_recall", "crystal_precision",
                "review_share_at_recall_95", "review_share_at_recall_99"):
        assert key in report.metrics
    truth = np.isin(y, [3, 5, 7])
    cprob = probs[:, [2, 4, 6]].sum(axis=1)
    assert report.metrics["crystal_auc"] == pytest.approx(skm.roc_auc_score(truth, cprob))
    assert report.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1) + 1))
    assert report.metrics["review_share_at_recall_95"] <= report.metrics["review_share_at_recall_99"]

    md = report.markdown
    assert "Overall: 0.9080" in md and "| 13830 |" in md  # paper's Tables 2 and 4
    assert "synthetic test archive" in md and "HWI" in md
    assert set(report.figures) == {"crystal_roc.png", "confusion.png", "first_layer_filters.png", "reliability.png"}
    for name in report.figures:
        assert f"]({name})" in md
        assert report.figures[name][:8] == b"\x89PNG\r\n\x1a\n"
    embedded = report.markdown_embedded()
    assert "data:image/png;base64," in embedded and "](crystal_roc.png)" not in embedded
    assert "<table" in report.html and "Precipitate &amp; Crystal" in report.html

    out = tmp_path / "rep"
    assert (out / "report.md").read_text() == md
    assert (out / "report.html").read_text() == report.html
    assert (out / "crystal_roc.png").read_bytes() == report.figures["crystal_roc.png"]
    assert not list(out.glob(".*"))  # no temp files left behind


def test_report_survives_a_set_without_crystals():
    y = np.array([1, 2, 1, 2])
    report = evaluation_report(_one_hot_probs([1, 2, 2, 2]), y, model_name="m",
                               archive_description="tiny")
    assert math.isnan(report.metrics["crystal_auc"])
    assert math.isnan(report.metrics["review_share_at_recall_95"])
    assert "undefined" in report.markdown or "–" in report.markdown


def test_report_metrics_json_and_markdown_come_from_one_computation(tmp_path):
    import json

    from crystal_pipeline.evaluation.calibration import apply_temperature, expected_calibration_error

    rng = np.random.default_rng(4)
    y = rng.choice([1, 2, 3, 5, 9], size=250)
    logits = rng.normal(size=(250, 10))
    logits[np.arange(250), y - 1] += 1.2
    raw = np.exp(5 * logits) / np.exp(5 * logits).sum(axis=1, keepdims=True)  # over-confident
    out = tmp_path / "rep"
    report = evaluation_report(raw, y, model_name="CrystalNet v1", model_version="v1", split="test",
                               temperature=3.0, archive_description="toy", out_dir=out)
    stored = json.loads((out / "metrics.json").read_text())
    for key in ("model_version", "split", "n_images", "accuracy", "accuracy_ci95", "balanced_accuracy",
                "balanced_accuracy_ci95", "macro_f1", "crystal_auc", "crystal_auc_ci95", "crystal_recall_target",
                "review_share_at_recall_target", "temperature", "ece_before", "ece_after", "per_class", "baselines"):
        assert key in stored, key
    assert stored["split"] == "test" and stored["model_version"] == "v1" and stored["n_images"] == 250
    calibrated = apply_temperature(raw, 3.0)
    assert stored["ece_before"] == pytest.approx(expected_calibration_error(raw, y - 1))
    assert stored["ece_after"] == pytest.approx(expected_calibration_error(calibrated, y - 1))
    assert stored["ece_after"] < stored["ece_before"]
    assert stored["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, raw.argmax(1) + 1))
    assert stored["crystal_auc"] == pytest.approx(
        skm.roc_auc_score(np.isin(y, [3, 5, 7]), calibrated[:, [2, 4, 6]].sum(axis=1)))
    assert stored["per_class"]["skin"]["support"] == int((y == 9).sum())
    # The Markdown and the UI metadata show the same numbers as the file.
    for key in ("accuracy", "balanced_accuracy", "crystal_auc", "ece_after"):
        assert report.metrics[key] == pytest.approx(stored[key])
        assert f"{stored[key]:.4f}" in report.markdown
    low, high = stored["balanced_accuracy_ci95"]
    assert f"[{low:.4f}, {high:.4f}]" in report.markdown and "test split, 250 images" in report.markdown
    assert "Balanced accuracy" in report.markdown and "Macro F1" in report.markdown
    # A re-run gives the same intervals; the model comparison's baselines survive it.
    stored["baselines"] = {"RF": {"accuracy": 0.5}}
    (out / "metrics.json").write_text(json.dumps(stored))
    again = evaluation_report(raw, y, model_name="CrystalNet v1", model_version="v1", split="test",
                              temperature=3.0, archive_description="toy", out_dir=out)
    assert again.result["accuracy_ci95"] == report.result["accuracy_ci95"]
    assert json.loads((out / "metrics.json").read_text())["baselines"] == {"RF": {"accuracy": 0.5}}
