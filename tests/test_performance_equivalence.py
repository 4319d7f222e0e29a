"""The fast selection path equals the reference one: same scores, same selections, same refusals.

The references below are the implementations before the performance work (float64 copy of the whole
array, per-row partition, scipy's ``entr``), written out here so the comparison does not depend on them.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import entr

from activelab.errors import ConfigError
from activelab.strategies import base, registry, select_top
from activelab.strategies import bayesian, uncertainty

UNCERTAINTY = ["least_confidence", "margin", "ratio", "entropy"]
MC = ["bald", "mc_least_confidence", "mc_margin", "mc_ratio", "mc_entropy", "variation_ratios", "mean_std"]


def reference_top_two(probs):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 1:
        return probs[:, 0], np.zeros(probs.shape[0])
    top = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1], top[:, 0]


def reference_uncertainty(name, probs):
    first, second = reference_top_two(probs)
    if name == "least_confidence":
        return 1.0 - first
    if name == "margin":
        return 1.0 - (first - second)
    if name == "ratio":
        return np.divide(second, first, out=np.zeros_like(first), where=first > 0)
    return entr(np.asarray(probs, dtype=np.float64)).sum(axis=1)


def reference_mc(name, probs_T_N_C):
    probs = np.asarray(probs_T_N_C, dtype=np.float64)
    mean = probs.mean(axis=0)
    if name == "bald":
        return np.maximum(entr(mean).sum(axis=1) - entr(probs).sum(axis=2).mean(axis=0), 0.0)
    if name == "variation_ratios":
        votes = probs.argmax(axis=2)
        counts = np.stack([(votes == c).sum(axis=0) for c in range(probs.shape[2])], axis=1)
        return 1.0 - counts.max(axis=1) / probs.shape[0]
    if name == "mean_std":
        return probs.std(axis=0).mean(axis=1)
    return reference_uncertainty(name[3:], mean)


def random_probs(shape, seed, dtype=np.float32, ties=True):
    """Random probability rows with exact zeros, one-hot rows and many duplicated rows (ties)."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.standard_normal(shape)
    logits[..., : shape[-1] // 3] -= 40.0 * (rng.random(shape[:-1]) < 0.2)[..., None]
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    probs = probs.astype(dtype)
    pool_axis = probs.ndim - 2
    if ties:
        n_pool = shape[pool_axis]
        copies = rng.integers(0, n_pool, size=n_pool // 3)
        sources = rng.integers(0, 5, size=copies.size)
        index = [slice(None)] * probs.ndim
        index[pool_axis], src = copies, [slice(None)] * probs.ndim
        src[pool_axis] = sources
        probs[tuple(index)] = probs[tuple(src)]
        one_hot = np.zeros(shape[-1], dtype=dtype)
        one_hot[0] = 1
        index[pool_axis] = rng.integers(0, n_pool, size=n_pool // 10)
        probs[tuple(index)] = one_hot
    return probs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNCERTAINTY)
def test_uncertainty_scores_and_selections_equal_the_reference(name, dtype, monkeypatch):
    monkeypatch.setattr(uncertainty, "BLOCK_ROWS", 97)   # many blocks, a ragged last one
    for seed in range(3):
        probs = random_probs((3000, 7), seed, dtype)
        expected = reference_uncertainty(name, probs)
        np.testing.assert_array_equal(getattr(uncertainty, f"score_{name}")(probs), expected)
        for n in (1, 10, 500, 3000):
            fast = registry()[name](n, rng=np.random.default_rng(seed), probs_N_C=probs)
            slow = select_top(expected, n, rng=np.random.default_rng(seed))
            assert fast.positions.tolist() == slow.positions.tolist()
            np.testing.assert_array_equal(fast.scores, slow.scores)


def test_entropy_float32_approximation_is_within_its_bound():
    for classes in (2, 10, 50):
        probs = random_probs((5000, classes), classes)
        approx, tol = uncertainty.score_entropy.approximate(probs)
        assert np.abs(approx - reference_uncertainty("entropy", probs)).max() <= tol / 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", MC)
def test_mc_scores_and_selections_equal_the_reference(name, dtype, monkeypatch):
    monkeypatch.setattr(bayesian, "APPROX_CHUNK_ELEMENTS", 1000)
    for seed in range(2):
        probs = random_probs((6, 2000, 5), seed, dtype)
        expected = reference_mc(name, probs)
        np.testing.assert_allclose(getattr(bayesian, f"score_{name}")(probs), expected, rtol=1e-12, atol=1e-12)
        for n in (1, 10, 300):
            fast = registry()[name](n, rng=np.random.default_rng(seed), probs_T_N_C=probs)
            whole = select_top(getattr(bayesian, f"score_{name}")(probs), n, rng=np.random.default_rng(seed))
            assert fast.positions.tolist() == whole.positions.tolist()
            np.testing.assert_array_equal(fast.scores, whole.scores)
            np.testing.assert_allclose(fast.scores, np.sort(expected)[::-1][:n], rtol=1e-12, atol=1e-12)


def test_refined_selection_handles_a_pool_of_identical_items():
    probs = np.tile(np.float32([0.5, 0.3, 0.2]), (1000, 1))
    for seed in range(3):
        fast = registry()["entropy"](5, rng=np.random.default_rng(seed), probs_N_C=probs)
        slow = select_top(reference_uncertainty("entropy", probs), 5, rng=np.random.default_rng(seed))
        assert fast.positions.tolist() == slow.positions.tolist()


@pytest.mark.parametrize("bad, message", [
    (np.float32([[0.5, 0.5], [np.nan, 1.0]]), "NaN"),
    (np.float32([[0.5, 0.5], [np.inf, 0.0]]), "NaN or infinite"),
    (np.float32([[0.5, 0.5], [1.2, -0.2]]), "in \\[0, 1\\]"),
    (np.float32([[0.5, 0.5], [0.5, 0.6]]), "summing to 1.1"),
])
@pytest.mark.parametrize("block", [1, 2**18])
def test_public_call_still_refuses_bad_probabilities(bad, message, block, monkeypatch):
    from activelab import validation
    monkeypatch.setattr(validation, "CHECK_BLOCK_ELEMENTS", block)
    with pytest.raises(ConfigError, match=message):
        registry()["entropy"](1, rng=np.random.default_rng(0), probs_N_C=bad)
    with pytest.raises(ConfigError, match=message):
        registry()["bald"](1, rng=np.random.default_rng(0), probs_T_N_C=np.stack([bad, bad]))


def test_nan_is_reported_before_a_bad_row_sum_in_an_earlier_block(monkeypatch):
    from activelab import validation
    monkeypatch.setattr(validation, "CHECK_BLOCK_ELEMENTS", 2)
    bad = np.float32([[0.5, 0.6], [0.5, 0.5], [np.nan, 1.0]])
    with pytest.raises(ConfigError, match="NaN"):
        registry()["margin"](1, rng=np.random.default_rng(0), probs_N_C=bad)


def test_take_keeps_reductions_identical():
    probs = random_probs((5, 300, 4), 3, np.float32, ties=False)
    positions = np.array([3, 17, 250])
    taken = base._take("probs_T_N_C", probs, positions)
    assert taken.flags.c_contiguous
    np.testing.assert_array_equal(bayesian.score_bald(taken), bayesian.score_bald(probs)[positions])
