"""The contract every registered strategy keeps, checked for all of them (present and future).

n unique in-range positions in priority order; n >= N gives the whole pool; equal seeds give equal
selections; inputs are never mutated; every strategy is documented with a description and a reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelab.strategies import INPUTS, registry

NAMES = sorted(registry())


def make_inputs(needs: tuple[str, ...], n_pool: int, seed: int) -> dict[str, np.ndarray]:
    """Random but valid inputs for a pool of ``n_pool`` items, with clustered embeddings."""
    rng = np.random.default_rng(seed)
    classes, width = 4, 6
    centres = rng.normal(scale=5.0, size=(3, width))
    makers = {
        "probs_N_C": lambda: rng.dirichlet(np.full(classes, 0.5), size=n_pool),
        "probs_T_N_C": lambda: rng.dirichlet(np.full(classes, 0.5), size=(5, n_pool)),
        "emb_N_D": lambda: centres[rng.integers(0, 3, n_pool)] + rng.normal(size=(n_pool, width)),
        "labelled_emb_M_D": lambda: centres[rng.integers(0, 3, 7)] + rng.normal(size=(7, width)),
        "logits_N_C": lambda: centres[rng.integers(0, 3, n_pool), :classes] + rng.normal(size=(n_pool, classes)),
        "act_mean_N_L": lambda: rng.normal(size=(n_pool, 3)),
        "act_max_N_L": lambda: rng.normal(loc=3.0, size=(n_pool, 3)),
        "grad_emb_N_D": lambda: rng.normal(size=(n_pool, classes * width)),
        "p_wrong_N": lambda: rng.random(n_pool),
        "p_unlabelled_N": lambda: rng.random(n_pool),
    }
    return {need: makers[need]() for need in needs}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loops_unchecked_path_selects_what_the_public_call_does(name, dtype):
    strategy = registry()[name]
    inputs = {key: value.astype(dtype) for key, value in make_inputs(strategy.needs, 80, seed=5).items()}
    inputs["some_other_output"] = np.zeros(3)  # the loop passes everything it computed
    public = strategy(9, rng=np.random.default_rng(3), n_pool=80, **inputs)
    loop = strategy.on_computed_inputs(9, rng=np.random.default_rng(3), n_pool=80, **inputs)
    assert loop.positions.tolist() == public.positions.tolist()
    assert np.array_equal(loop.scores, public.scores, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_pool, n", [(60, 7), (25, 25), (12, 40)])
def test_contract(name, n_pool, n):
    strategy = registry()[name]
    inputs = make_inputs(strategy.needs, n_pool, seed=n_pool + n)
    originals = {key: value.copy() for key, value in inputs.items()}
    selection = strategy(n, rng=np.random.default_rng(11), n_pool=n_pool, **inputs)
    positions = selection.positions
    assert positions.dtype == np.int64
    assert positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert positions.min() >= 0 and positions.max() < n_pool
    assert selection.scores.shape == positions.shape
    if n >= n_pool:
        assert sorted(positions.tolist()) == list(range(n_pool))
    again = strategy(n, rng=np.random.default_rng(11), n_pool=n_pool, **inputs)
    assert again.positions.tolist() == positions.tolist()
    for key, value in inputs.items():
        assert np.array_equal(value, originals[key]), f"{name} mutated {key}"


@pytest.mark.parametrize("name", NAMES)
def test_documented(name):
    strategy = registry()[name]
    assert strategy.description and strategy.reference and strategy.family
    assert strategy.select.__doc__, f"{name} has no docstring"
    assert set(strategy.needs) <= set(INPUTS)


def test_every_input_is_exercised_here():
    """A new input name must get a maker above, so the contract covers the strategies that need it."""
    makers = make_inputs(tuple(INPUTS), 5, seed=0)
    assert set(makers) == set(INPUTS)
    used = {need for strategy in registry().values() for need in strategy.needs}
    assert used == set(INPUTS), f"inputs no strategy needs: {set(INPUTS) - used}"


def test_the_study_strategies_are_all_registered():
    study = {"random", "least_confidence", "margin", "ratio", "entropy", "bald", "mc_entropy", "mb_outliers_mean",
             "mb_outliers_max", "outlier", "cluster_outlier_combined", "mb_outliers_mean_least_confidence",
             "mb_outliers_mean_entropy", "active_transfer_learning", "dal"}
    assert study <= set(NAMES)


@st.composite
def adversarial_inputs(draw, needs: tuple[str, ...]):
    """Inputs built from a few distinct rows repeated: one-hot, uniform and duplicated probabilities,
    constant or duplicated embeddings and activations, all-equal helper probabilities."""
    n_pool = draw(st.integers(1, 30))
    classes, width = draw(st.integers(1, 4)), 3
    rows = draw(st.lists(st.integers(0, 2), min_size=n_pool, max_size=n_pool))
    one_hot = np.eye(classes)[0]
    uniform = np.full(classes, 1.0 / classes)
    halves = np.zeros(classes)
    halves[: min(2, classes)] = 1.0 / min(2, classes)
    probs = np.stack([(one_hot, uniform, halves)[row] for row in rows])
    vectors = np.stack([np.full(width, float(row)) for row in rows])
    scale = draw(st.sampled_from([0.0, 1.0, 1e6]))
    makers = {
        "probs_N_C": lambda: probs,
        "probs_T_N_C": lambda: np.stack([probs, probs[::-1]]),
        "emb_N_D": lambda: vectors * scale,
        "labelled_emb_M_D": lambda: vectors[: min(3, n_pool)] * scale,
        "logits_N_C": lambda: np.repeat(vectors[:, :1] * scale, classes, axis=1),
        "act_mean_N_L": lambda: vectors * scale,
        "act_max_N_L": lambda: vectors * scale,
        "grad_emb_N_D": lambda: np.repeat(vectors * scale, classes, axis=1),
        "p_wrong_N": lambda: np.full(n_pool, 0.5),
        "p_unlabelled_N": lambda: np.full(n_pool, 0.5),
    }
    return n_pool, {need: makers[need]() for need in needs}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n=st.integers(1, 40))
def test_degenerate_inputs_still_give_a_valid_selection(name, data, n):
    strategy = registry()[name]
    n_pool, inputs = data.draw(adversarial_inputs(strategy.needs))
    selection = strategy(n, rng=np.random.default_rng(0), n_pool=n_pool, **inputs)
    positions = selection.positions
    assert positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert positions.size == 0 or (positions.min() >= 0 and positions.max() < n_pool)
    assert selection.scores.shape == positions.shape
