"""Mixed outlier/uncertainty strategies, active transfer learning and DAL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activelab.errors import ConfigError
from activelab.strategies import get_strategy
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
    """20 items: rows 15-19 are the quietest (the candidates), rows 0-4 the most uncertain of all."""
    act = np.ones((20, 3))
    act[15:] = -np.arange(5, 10)[:, None]
    probs = np.full((20, 3), [0.98, 0.01, 0.01])
    probs[:5] = 1.0 / 3.0
    top = np.array([0.9, 0.6, 0.8, 0.5, 0.7])
    probs[15:] = np.column_stack([top, (1 - top) * 0.75, (1 - top) * 0.25])
    return act, probs


@pytest.mark.parametrize("name", MIXED)
def test_mixed_strategies_return_pool_positions_not_candidate_positions(name):
    act, probs = mixed_pool()
    selection = run(name, 3, act_N_L=act, probs_N_C=probs, candidates=5)
    assert selection.positions.tolist() == [18, 16, 19]       # the study's bug would give [3, 1, 4]
    np.testing.assert_allclose(selection.scores, SCORES[name](probs[[18, 16, 19]]))


@pytest.mark.parametrize("name", MIXED)
def test_mixed_strategies_fill_the_batch_when_candidates_are_fewer(name):
    act, probs = mixed_pool()
    selection = run(name, 8, act_N_L=act, probs_N_C=probs, candidates=2)
    assert np.unique(selection.positions).size == 8
    assert set(range(15, 20)) <= set(selection.positions.tolist())


@pytest.mark.parametrize("name", MIXED)
def test_mixed_strategies_with_the_whole_pool_as_candidates_rank_by_uncertainty(name):
    act, probs = mixed_pool()
    selection = run(name, 7, act_N_L=act, probs_N_C=probs, candidates=4000)
    assert sorted(selection.positions[:5].tolist()) == [0, 1, 2, 3, 4]
    assert selection.positions[5:].tolist() == [18, 16]


@pytest.mark.parametrize("value", [0, 2.5, "many"])
def test_candidates_option_is_checked(value):
    act, probs = mixed_pool()
    with pytest.raises(ConfigError, match="candidates"):
        run(MIXED[0], 2, act_N_L=act, probs_N_C=probs, candidates=value)


@pytest.mark.parametrize("name, key", [("active_transfer_learning", "p_wrong_N"), ("dal", "p_unlabelled_N")])
def test_auxiliary_strategies_take_the_highest_probabilities(name, key):
    selection = run(name, 2, **{key: np.array([0.1, 0.9, 0.5, 0.95])})
    assert selection.positions.tolist() == [3, 1]
    np.testing.assert_allclose(selection.scores, [0.95, 0.9])


def mixed_inputs(n_pool: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"act_N_L": rng.normal(size=(n_pool, 3)), "probs_N_C": rng.dirichlet(np.ones(4), size=n_pool)}


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 50), n=st.integers(1, 60), candidates=st.integers(1, 60),
       seed=st.integers(0, 2**32 - 1), name=st.sampled_from(MIXED))
def test_mixed_properties(n_pool, n, candidates, seed, name):
    inputs = mixed_inputs(n_pool, seed)
    assert_contract(name, n, seed, candidates=candidates, **inputs)
    perm = np.random.default_rng(seed).permutation(n_pool)
    original = run(name, n, **inputs, candidates=candidates)
    permuted = run(name, n, **{key: value[perm] for key, value in inputs.items()}, candidates=candidates)
    np.testing.assert_allclose(permuted.scores, original.scores, atol=1e-12)
    np.testing.assert_array_equal(perm[permuted.positions], original.positions)


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
