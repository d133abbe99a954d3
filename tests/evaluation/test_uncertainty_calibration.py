"""Bootstrap intervals, McNemar and temperature scaling against known answers."""

import math

import numpy as np
import pytest

from crystal_pipeline.evaluation.calibration import (
    apply_temperature, expected_calibration_error, fit_temperature, reliability_bins)
from crystal_pipeline.evaluation.metrics import binary_auc
from crystal_pipeline.evaluation.uncertainty import (
    bootstrap_ci, bootstrap_mean_ci, mcnemar, paired_auc_difference)


def test_bootstrap_interval_covers_the_true_accuracy_at_about_its_nominal_rate():
    rng = np.random.default_rng(1)
    true_p, n, trials = 0.8, 300, 300
    covered = 0
    for t in range(trials):
        sample = rng.random(n) < true_p
        low, high = bootstrap_mean_ci(sample, n_resamples=400, seed=t)
        covered += low <= true_p <= high
    rate = covered / trials
    # 95% nominal; the percentile bootstrap runs a little short at n=300. 300 trials: SE ~1.3 points.
    assert 0.90 <= rate <= 0.99, rate


def test_bootstrap_ci_of_a_statistic_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, 500)
    a = bootstrap_ci(np.median, x, n_resamples=300, seed=3)
    assert a == bootstrap_ci(np.median, x, n_resamples=300, seed=3)
    assert a[0] < np.median(x) < a[1] and a[1] - a[0] < 0.5
    with pytest.raises(ValueError):
        bootstrap_ci(lambda u, v: 0.0, x, x[:10])


def test_mcnemar_matches_the_hand_computed_exact_p_value():
    # 10 images only A gets right, 2 only B, 30 both, 8 neither.
    a = [1] * 10 + [0] * 2 + [1] * 30 + [0] * 8
    b = [0] * 10 + [1] * 2 + [1] * 30 + [0] * 8
    result = mcnemar(a, b)
    assert (result.only_a_right, result.only_b_right) == (10, 2)
    # two-sided exact binomial: 2 * P(X <= 2 | n=12, p=1/2) = 2 * (1 + 12 + 66) / 4096
    assert result.p_value == pytest.approx(2 * 79 / 4096, rel=1e-9)
    assert mcnemar([1, 0, 1], [1, 0, 1]).p_value == 1.0
    assert mcnemar(b, a).p_value == pytest.approx(result.p_value)


def _overconfident(n=4000, classes=10, sharpen=3.0, seed=0):
    """Labels drawn from calibrated probabilities, then the logits multiplied by ``sharpen``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.0, (n, classes))
    calibrated = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in calibrated])
    return apply_temperature(calibrated, 1.0 / sharpen), labels


def test_temperature_scaling_recovers_the_temperature_and_lowers_ece():
    probs, labels = _overconfident()
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(apply_temperature(probs, t), labels)
    assert before > 0.15 and after < 0.05 and after < before / 3
    # ranking and argmax unchanged
    assert (apply_temperature(probs, t).argmax(1) == probs.argmax(1)).all()


def test_reliability_bins_count_every_image_once():
    probs, labels = _overconfident(n=500)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b.count for b in bins) == 500
    filled = [b for b in bins if b.count]
    assert all(b.low <= b.confidence <= b.high + 1e-12 for b in filled)
    assert math.isnan(expected_calibration_error(probs[:0], labels[:0]))


def test_paired_auc_difference_is_the_difference_with_a_paired_interval():
    rng = np.random.default_rng(2)
    truth = rng.random(400) < 0.3
    good = truth + rng.normal(0, 0.6, 400)  # ranks crystals well
    poor = truth + rng.normal(0, 2.0, 400)  # barely
    diff, (low, high) = paired_auc_difference(truth, good, poor, n_resamples=500, seed=1)
    assert diff == pytest.approx(binary_auc(truth, good) - binary_auc(truth, poor))
    assert 0 < low <= diff <= high  # the better model's lead excludes zero
    # resampled together: the same scores twice differ by exactly nothing on every resample
    assert paired_auc_difference(truth, good, good, n_resamples=200) == (0.0, (0.0, 0.0))
    # and seeded like bootstrap_ci, of which it is the paired case
    assert (low, high) == bootstrap_ci(lambda t, a, b: binary_auc(t, a) - binary_auc(t, b), truth, good, poor,
                                       n_resamples=500, seed=1)
