"""activelab.stats: every statistic of the report against an answer known without the code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activelab import stats
from activelab.errors import ConfigError


# ------------------------------------------------------------------------------------------------ AUBC

@pytest.mark.parametrize("a, b", [(0.5, 0.9), (0.1, 0.3), (0.8, 0.6)])
def test_aubc_of_a_straight_line_is_the_mean_of_its_ends(a, b):
    labels = np.array([100, 200, 300, 400, 500])
    accuracy = a + (b - a) * (labels - 100) / 400
    assert stats.aubc(labels, accuracy) == pytest.approx((a + b) / 2, abs=1e-15)


def test_aubc_of_a_straight_line_over_uneven_rounds():
    labels = np.array([20, 30, 60, 100, 220])
    accuracy = 0.2 + 0.003 * labels
    assert stats.aubc(labels, accuracy) == pytest.approx((0.2 + 0.003 * 20 + 0.2 + 0.003 * 220) / 2, abs=1e-15)


def test_aubc_by_hand_is_the_trapezoid_area_over_the_label_range():
    # Trapezoids: 100 * (0.5 + 0.7) / 2 = 60 and 300 * (0.7 + 0.8) / 2 = 225, over a range of 400.
    assert stats.aubc([100, 200, 500], [0.5, 0.7, 0.8]) == pytest.approx(285 / 400, abs=1e-15)


def test_aubc_sorts_the_points_and_a_single_point_is_its_value():
    assert stats.aubc([500, 100, 200], [0.8, 0.5, 0.7]) == stats.aubc([100, 200, 500], [0.5, 0.7, 0.8])
    assert stats.aubc([100], [0.42]) == 0.42


@pytest.mark.parametrize("labels, values", [([], []), ([1, 2], [0.5]), ([1, 1], [0.5, 0.6]), ([1, 2], [0.5, np.nan])])
def test_aubc_refuses_a_curve_it_cannot_integrate(labels, values):
    with pytest.raises(ConfigError):
        stats.aubc(labels, values)


# ------------------------------------------------------------------------------------ labels to target

def test_labels_to_reach_the_first_point_at_or_above_the_target():
    labels, accuracy = [100, 200, 300, 400], [0.62, 0.75, 0.71, 0.86]
    assert stats.labels_to_reach(labels, accuracy, 0.7) == 200
    assert stats.labels_to_reach(labels, accuracy, 0.75) == 200  # equal counts as reached
    assert stats.labels_to_reach(labels, accuracy, 0.8) == 400
    assert stats.labels_to_reach(labels, accuracy, 0.6) == 100
    assert stats.labels_to_reach(labels, accuracy, 0.9) is None
    assert stats.labels_to_reach([400, 100, 300, 200], [0.86, 0.62, 0.71, 0.75], 0.7) == 200


# ----------------------------------------------------------------------------------------- t interval

def test_t_interval_against_the_closed_form_quantile_for_two_degrees_of_freedom():
    # For 2 degrees of freedom the t quantile is (2p - 1) / sqrt(2 p (1 - p)); p = 0.975 for 95 %.
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    mean, low, high = stats.t_interval([1.0, 2.0, 3.0])  # mean 2, sample sd 1
    assert mean == 2.0
    assert low == pytest.approx(2 - t / math.sqrt(3), abs=1e-12)
    assert high == pytest.approx(2 + t / math.sqrt(3), abs=1e-12)


def test_t_interval_edge_cases():
    assert all(math.isnan(value) for value in stats.t_interval([]))
    mean, low, high = stats.t_interval([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    narrow, wide = stats.t_interval([1.0, 2.0, 3.0], 0.5), stats.t_interval([1.0, 2.0, 3.0], 0.99)
    assert wide[1] < narrow[1] < narrow[2] < wide[2]


# ------------------------------------------------------------------------------------ paired statistics

def test_wilcoxon_eight_pairs_all_better_gives_the_exact_smallest_p():
    differences = np.array([0.01, 0.02, 0.03, 0.015, 0.025, 0.005, 0.012, 0.018])
    assert stats.wilcoxon_p(differences) == pytest.approx(2 / 256, abs=1e-15)
    assert stats.wilcoxon_p(-differences) == pytest.approx(2 / 256, abs=1e-15)
    assert stats.smallest_wilcoxon_p(8) == 2 / 256


def test_wilcoxon_no_difference_is_p_one_and_no_pairs_is_nan():
    assert stats.wilcoxon_p(np.zeros(8)) == 1.0
    assert stats.wilcoxon_p(np.full(5, 1e-15)) == 1.0  # rounding noise is a tie
    assert math.isnan(stats.wilcoxon_p([]))


def test_few_pairs_cannot_give_a_small_p():
    assert stats.smallest_wilcoxon_p(5) == 0.0625
    assert stats.wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == 0.0625
    assert stats.smallest_wilcoxon_p(1) == 1.0
    assert math.isnan(stats.smallest_wilcoxon_p(0))


def test_bootstrap_interval_is_seeded_and_above_zero_when_every_pair_is_better():
    differences = [0.01, 0.02, 0.03, 0.015, 0.025, 0.005, 0.012, 0.018]
    low, high = stats.paired_bootstrap_ci(differences, seed=3)
    assert 0 < low < np.mean(differences) < high <= max(differences)
    assert stats.paired_bootstrap_ci(differences, seed=3) == (low, high)


def test_bootstrap_interval_without_differences_is_zero_and_with_one_pair_undefined():
    assert stats.paired_bootstrap_ci(np.zeros(8)) == (0.0, 0.0)
    assert all(math.isnan(value) for value in stats.paired_bootstrap_ci([0.3]))


def test_bootstrap_interval_of_mixed_differences_contains_zero():
    low, high = stats.paired_bootstrap_ci([0.02, -0.01, 0.01, -0.02, 0.015, -0.015, 0.0, 0.005], seed=0)
    assert low < 0 < high


def test_effect_sizes():
    assert stats.rank_biserial([0.1, 0.2, 0.3]) == 1.0
    assert stats.rank_biserial([-0.1, -0.2]) == -1.0
    assert stats.rank_biserial([1.0, -2.0, 3.0]) == pytest.approx((1 + 3 - 2) / 6)
    assert stats.rank_biserial([1.0, 0.0, -2.0, 3.0]) == pytest.approx((1 + 3 - 2) / 6)  # the zero is left out
    assert math.isnan(stats.rank_biserial([0.0, 0.0]))
    assert stats.standardised_mean_difference([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert math.isnan(stats.standardised_mean_difference([0.5, 0.5]))
    assert math.isnan(stats.standardised_mean_difference([0.5]))


def test_compare_paired_counts_wins_ties_and_losses():
    result = stats.compare_paired([0.8, 0.7, 0.6, 0.9], [0.7, 0.7, 0.65, 0.8], seed=0)
    assert (result.n_pairs, result.wins, result.ties, result.losses) == (4, 2, 1, 1)
    assert result.mean_difference == pytest.approx(0.0375)
    assert result.smallest_p == 2 / 2 ** 3
    with pytest.raises(ConfigError):
        stats.compare_paired([0.1, 0.2], [0.1])
    empty = stats.compare_paired([], [])
    assert empty.n_pairs == 0 and math.isnan(empty.p_value) and math.isnan(empty.mean_difference)


# ---------------------------------------------------------------------------------------------- Holm

def test_holm_on_known_p_values():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06], rtol=0, atol=1e-15)
    np.testing.assert_allclose(stats.holm([0.01, 0.02, 0.03, 0.5]), [0.04, 0.06, 0.06, 0.5], atol=1e-15)
    np.testing.assert_allclose(stats.holm([0.4, 0.6]), [0.8, 0.8], atol=1e-15)  # capped, then monotone
    np.testing.assert_allclose(stats.holm([0.6, 0.9]), [1.0, 1.0], atol=1e-15)
    assert stats.holm([0.2]).tolist() == [0.2]
    assert stats.holm([]).size == 0


def test_holm_leaves_untested_comparisons_out_of_the_family():
    adjusted = stats.holm([0.01, np.nan, 0.03])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.02, 0.03], atol=1e-15)
    assert math.isnan(adjusted[1])
    with pytest.raises(ConfigError):
        stats.holm([1.5])


# ------------------------------------------------------------------------------------------ imbalance

def test_imbalance_ratio():
    assert stats.imbalance_ratio([4, 2, 2]) == 2.0
    assert stats.imbalance_ratio([3, 3]) == 1.0
    assert stats.imbalance_ratio([3, 3, 0]) == math.inf
    assert math.isnan(stats.imbalance_ratio([0, 0]))
    assert math.isnan(stats.imbalance_ratio([]))
