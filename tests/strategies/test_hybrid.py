"""Mixed outlier/uncertainty strategies, active transfer learning and DAL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activelab.errors import ConfigError
from activelab.strategies import get_strategy
from activelab.strategies.outliers import score_mb_outliers_mean
from activelab.strategies.uncertainty import score_entropy, score_least_confidence

MIXED = ["mb_outliers_mean_least_confidence", "mb_outliers_mean_entropy"]
SCORES = {"mb_outliers_mean_least_confidence": score_least_confidence, "mb_outliers_mean_entropy": score_entropy}


def run(name: str, n: int, seed: int = 0, **inputs):
    return get_strategy(name)(n, rng=np.random.default_rng(seed), **inputs)


def assert_contract(name: str, n: int, seed: int, **inputs):
    """n unique in-range positions, the whole pool when n >= N, same seed same result, no mutation."""
    before = {key: value.copy() for key, value in inputs.items() if isinstance(value, np.ndarray)}
    first, again = run(name, n, seed, **inputs), run(name, n, seed, **inputs)
    n_pool = next(iter(before.values())).shape[0]
    positions = first.positions
    assert positions.dtype == np.int64 and positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert ((positions >= 0) & (positions < n_pool)).all()
    if n >= n_pool:
        assert sorted(positions.tolist()) == list(range(n_pool))
    np.testing.assert_array_equal(again.positions, positions)
    np.testing.assert_array_equal(again.scores, first.scores)
    for key, value in before.items():
        np.testing.assert_array_equal(inputs[key], value, err_msg=f"{name} mutated {key}")
    return first


def mixed_pool() -> tuple[np.ndarray, np.ndarray]:
    """20 items: rows 12-15 are the only uncertain ones; every other row is confident and far quieter."""
    probs = np.full((20, 3), [0.98, 0.01, 0.01])
    probs[12:16] = [[0.40, 0.30, 0.30], [0.35, 0.35, 0.30], [0.50, 0.30, 0.20], [0.45, 0.45, 0.10]]
    act = np.full((20, 3), -10.0)
    act[12:16] = np.array([3.0, 1.0, 2.0, 0.0])[:, None]
    return act, probs


@pytest.mark.parametrize("name", MIXED)
def test_mixed_strategies_presample_by_uncertainty_then_take_the_quietest(name):
    act, probs = mixed_pool()
    selection = run(name, 2, act_mean_N_L=act, probs_N_C=probs, presample_factor=2)
    assert selection.positions.tolist() == [15, 13]     # quietest of the 4 most uncertain, not rows 0-11/16-19
    np.testing.assert_allclose(selection.scores, score_mb_outliers_mean(act)[[15, 13]])
    assert run(name, 1, act_mean_N_L=act, probs_N_C=probs).positions.tolist() == [15]   # default factor 4


@pytest.mark.parametrize("name, expected", [
    ("mb_outliers_mean_least_confidence", [15, 13, 12]),   # candidates 13, 12, 15 (least confidence)
    ("mb_outliers_mean_entropy", [13, 14, 12]),            # candidates 13, 12, 14 (entropy)
])
def test_mixed_strategies_return_pool_positions_not_candidate_positions(name, expected):
    act, probs = mixed_pool()
    selection = run(name, 3, act_mean_N_L=act, probs_N_C=probs, presample_factor=1)
    assert selection.positions.tolist() == expected        # positions inside the candidate set would be 0-2


def test_least_confidence_and_entropy_presample_different_candidates():
    probs = np.array([[0.50, 0.50, 0.00, 0.00],     # least confidence 0.50, entropy 0.69
                      [0.55, 0.15, 0.15, 0.15],     # least confidence 0.45, entropy 1.18
                      [0.97, 0.01, 0.01, 0.01]])
    act = np.zeros((3, 3))
    common = dict(act_mean_N_L=act, probs_N_C=probs, presample_factor=1)
    assert run("mb_outliers_mean_least_confidence", 1, **common).positions.tolist() == [0]
    assert run("mb_outliers_mean_entropy", 1, **common).positions.tolist() == [1]


@pytest.mark.parametrize("name", MIXED)
@pytest.mark.parametrize("standardise", [True, False])
def test_mixed_strategies_with_the_whole_pool_as_candidates_are_mb_outliers_mean(name, standardise):
    act = np.random.default_rng(2).normal(size=(30, 3)) * [1.0, 10.0, 0.1]
    probs = np.random.default_rng(3).dirichlet(np.ones(4), size=30)
    mixed = run(name, 7, act_mean_N_L=act, probs_N_C=probs, presample_factor=5, standardise=standardise)
    alone = run("mb_outliers_mean", 7, act_mean_N_L=act, standardise=standardise)
    np.testing.assert_array_equal(mixed.positions, alone.positions)
    np.testing.assert_allclose(mixed.scores, alone.scores)


@pytest.mark.parametrize("option, value", [("presample_factor", 0), ("presample_factor", 2.5),
                                           ("presample_factor", "many"), ("standardise", "yes")])
def test_mixed_options_are_checked(option, value):
    act, probs = mixed_pool()
    with pytest.raises(ConfigError, match=option):
        run(MIXED[0], 2, act_mean_N_L=act, probs_N_C=probs, **{option: value})


@pytest.mark.parametrize("name, key", [("active_transfer_learning", "p_wrong_N"), ("dal", "p_unlabelled_N")])
def test_auxiliary_strategies_take_the_highest_probabilities(name, key):
    selection = run(name, 2, **{key: np.array([0.1, 0.9, 0.5, 0.95])})
    assert selection.positions.tolist() == [3, 1]
    np.testing.assert_allclose(selection.scores, [0.95, 0.9])


def mixed_inputs(n_pool: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"act_mean_N_L": rng.normal(size=(n_pool, 3)), "probs_N_C": rng.dirichlet(np.ones(4), size=n_pool)}


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 50), n=st.integers(1, 60), factor=st.integers(1, 6), seed=st.integers(0, 2**32 - 1),
       standardise=st.booleans(), name=st.sampled_from(MIXED))
def test_mixed_properties(n_pool, n, factor, seed, standardise, name):
    inputs = mixed_inputs(n_pool, seed)
    options = dict(presample_factor=factor, standardise=standardise)
    selection = assert_contract(name, n, seed, **options, **inputs)
    candidates = np.argsort(-SCORES[name](inputs["probs_N_C"]))[:factor * n]
    quiet = score_mb_outliers_mean(inputs["act_mean_N_L"], standardise=standardise)
    expected = candidates[np.argsort(-quiet[candidates])][:n]
    np.testing.assert_array_equal(selection.positions, expected)
    np.testing.assert_allclose(selection.scores, quiet[expected])
    perm = np.random.default_rng(seed).permutation(n_pool)
    permuted = run(name, n, **{key: value[perm] for key, value in inputs.items()}, **options)
    np.testing.assert_allclose(permuted.scores, selection.scores, atol=1e-12)
    np.testing.assert_array_equal(perm[permuted.positions], selection.positions)


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 50), n=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       ties=st.booleans(), name_key=st.sampled_from([("active_transfer_learning", "p_wrong_N"),
                                                     ("dal", "p_unlabelled_N")]))
def test_auxiliary_properties(n_pool, n, seed, ties, name_key):
    name, key = name_key
    probabilities = np.random.default_rng(seed).random(n_pool)
    probabilities = np.round(probabilities, 1) if ties else probabilities
    selection = assert_contract(name, n, seed, **{key: probabilities})
    assert np.all(np.diff(selection.scores) <= 0)
    perm = np.random.default_rng(seed).permutation(n_pool)
    permuted = run(name, n, seed, **{key: probabilities[perm]})
    np.testing.assert_array_equal(permuted.scores, selection.scores)
    if not ties:
        np.testing.assert_array_equal(perm[permuted.positions], selection.positions)
