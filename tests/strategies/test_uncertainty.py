"""Known answers and properties of random, least confidence, margin, ratio and entropy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from activelab.errors import ConfigError
from activelab.strategies import get_strategy, select_top
from activelab.strategies.uncertainty import score_entropy, score_least_confidence, score_margin, score_ratio

PROBS = np.array([[0.90, 0.05, 0.05],   # confident
                  [0.40, 0.35, 0.25],   # close top two
                  [0.50, 0.10, 0.40],
                  [1.00, 0.00, 0.00],   # certain, exact zeros
                  [1 / 3, 1 / 3, 1 / 3]])  # maximally uncertain


def test_scores_by_hand():
    np.testing.assert_allclose(score_least_confidence(PROBS), [0.10, 0.60, 0.50, 0.0, 2 / 3])
    np.testing.assert_allclose(score_margin(PROBS), [1 - 0.85, 1 - 0.05, 1 - 0.10, 0.0, 1.0])
    np.testing.assert_allclose(score_ratio(PROBS), [0.05 / 0.9, 0.35 / 0.4, 0.8, 0.0, 1.0])
    expected_entropy = [-(0.9 * np.log(0.9) + 2 * 0.05 * np.log(0.05)),
                        -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25)),
                        -(0.5 * np.log(0.5) + 0.1 * np.log(0.1) + 0.4 * np.log(0.4)), 0.0, np.log(3)]
    np.testing.assert_allclose(score_entropy(PROBS), expected_entropy)


@pytest.mark.parametrize("name, expected", [
    ("least_confidence", [4, 1]),   # 2/3 then 0.60: the LEAST confident rows (the seed picked the most)
    ("margin", [4, 1]),
    ("ratio", [4, 1]),              # 1.0 then 0.875 (the seed had this inverted too)
    ("entropy", [4, 1]),
])
def test_selection_known_answers(name, expected):
    selection = get_strategy(name)(2, rng=np.random.default_rng(0), probs_N_C=PROBS)
    assert selection.positions.tolist() == expected
    assert selection.positions.dtype == np.int64


def test_least_confidence_and_margin_differ_where_they_should():
    probs = np.array([[0.50, 0.49, 0.01], [0.40, 0.30, 0.30]])
    rng = np.random.default_rng(0)
    assert get_strategy("least_confidence")(1, rng=rng, probs_N_C=probs).positions.tolist() == [1]
    assert get_strategy("margin")(1, rng=rng, probs_N_C=probs).positions.tolist() == [0]


def test_random_returns_only_n_even_for_small_pools():
    # The seed returned the whole pool whenever it had at most 2,000 items.
    selection = get_strategy("random")(10, rng=np.random.default_rng(3), n_pool=1500)
    assert selection.positions.size == 10 and np.unique(selection.positions).size == 10


def test_select_top_breaks_ties_with_rng_not_position():
    scores = np.zeros(1000)
    first = {tuple(select_top(scores, 5, rng=np.random.default_rng(seed)).positions) for seed in range(5)}
    assert len(first) == 5
    assert select_top(scores, 5, rng=np.random.default_rng(1)).positions.tolist() == \
        select_top(scores, 5, rng=np.random.default_rng(1)).positions.tolist()


def test_select_top_orders_by_score_and_takes_all_above_threshold():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.7])
    selection = select_top(scores, 4, rng=np.random.default_rng(0))
    assert set(selection.positions[:2]) == {1, 3}
    assert selection.positions[2:].tolist() == [5, 2]
    np.testing.assert_allclose(selection.scores, [0.9, 0.9, 0.7, 0.5])


def _probabilities(draw_rows: int, classes: int):
    return arrays(np.float64, (draw_rows, classes), elements=st.sampled_from([0.0, 1.0, 0.5, 1e-12, 0.3, 7.0]))


@st.composite
def probability_arrays(draw):
    rows = draw(st.integers(1, 40))
    classes = draw(st.integers(1, 6))
    raw = draw(_probabilities(rows, classes))
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    return raw / raw.sum(axis=1, keepdims=True)


NAMES = ["least_confidence", "margin", "ratio", "entropy"]


@settings(max_examples=60, deadline=None)
@given(probs=probability_arrays(), n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1),
       name=st.sampled_from(NAMES))
def test_properties(probs, n, seed, name):
    original = probs.copy()
    strategy = get_strategy(name)
    selection = strategy(n, rng=np.random.default_rng(seed), probs_N_C=probs)
    assert selection.positions.size == min(n, probs.shape[0])
    assert np.unique(selection.positions).size == selection.positions.size
    assert selection.positions.min() >= 0 and selection.positions.max() < probs.shape[0]
    assert np.isfinite(selection.scores).all()
    assert np.array_equal(probs, original)
    again = strategy(n, rng=np.random.default_rng(seed), probs_N_C=probs)
    assert again.positions.tolist() == selection.positions.tolist()
    if n >= probs.shape[0]:
        assert sorted(selection.positions.tolist()) == list(range(probs.shape[0]))


@settings(max_examples=40, deadline=None)
@given(probs=probability_arrays(), seed=st.integers(0, 1000), name=st.sampled_from(NAMES))
def test_selected_scores_independent_of_pool_order(probs, seed, name):
    n = max(1, probs.shape[0] // 3)
    permutation = np.random.default_rng(seed).permutation(probs.shape[0])
    direct = get_strategy(name)(n, rng=np.random.default_rng(seed), probs_N_C=probs)
    permuted = get_strategy(name)(n, rng=np.random.default_rng(seed), probs_N_C=probs[permutation])
    np.testing.assert_allclose(np.sort(direct.scores), np.sort(permuted.scores))


@pytest.mark.parametrize("bad, message", [
    (np.array([[0.5, 0.6]]), "sum to 1"),
    (np.array([[np.nan, 1.0]]), "NaN"),
    (np.array([0.5, 0.5]), "2 axes"),
    (np.array([[1.5, -0.5]]), "in \\[0, 1\\]"),
])
def test_bad_probabilities_are_one_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy("margin")(1, rng=np.random.default_rng(0), probs_N_C=bad)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n(n):
    with pytest.raises(ConfigError, match="`n`"):
        get_strategy("entropy")(n, rng=np.random.default_rng(0), probs_N_C=PROBS)


def test_rng_must_be_a_generator():
    with pytest.raises(ConfigError, match="Generator"):
        get_strategy("entropy")(1, rng=0, probs_N_C=PROBS)
