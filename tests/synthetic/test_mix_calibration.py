"""The drawn-mix calibration: the solver inverts a known agreement matrix; the measured matrix is a
matrix of shares."""

import numpy as np
import pytest

from crystal_pipeline.synthetic.mix_calibration import (predicted_consensus, solve_mix, table2_shares,
                                                        unanimity_matrix)


def test_solver_recovers_the_mix_that_produced_a_consensus():
    rng = np.random.default_rng(0)
    rates = rng.uniform(0.3, 0.9, 10)
    matrix = np.diag(rates)
    matrix[4, 1] = 0.2  # some precipitate-crystal wells agreed as precipitate
    true_mix = rng.dirichlet(np.ones(10))
    consensus = predicted_consensus(matrix, true_mix)
    assert np.allclose(solve_mix(matrix, consensus), true_mix, atol=1e-9)


def test_table2_target_is_met_exactly_when_reachable():
    matrix = np.diag(np.linspace(0.3, 0.9, 10))
    mix = solve_mix(matrix)
    assert mix.min() >= 0 and mix.sum() == pytest.approx(1.0)
    assert np.allclose(predicted_consensus(matrix, mix), table2_shares())
    # a class the panel rarely agrees on (rate 0.3) is drawn above its consensus share, relative
    # to one it agrees on often (rate 0.9), by the ratio of the rates
    ratio = (mix[0] / table2_shares()[0]) / (mix[9] / table2_shares()[9])
    assert ratio == pytest.approx(0.9 / 0.3)


def test_measured_matrix_rows_are_shares_and_clear_wells_agree_most():
    matrix = unanimity_matrix(0.5, per_class=6, size=64)
    assert matrix.shape == (10, 10)
    assert (matrix >= 0).all() and (matrix.sum(axis=1) <= 1 + 1e-12).all()
    assert matrix[0, 0] >= matrix[4, 4]  # clear drops agree at least as often as precipitate & crystal
