"""Model-based outliers and the HDBSCAN/GLOSH strategies: hand-made answers, the library, properties."""

from __future__ import annotations

import logging
import warnings

import hdbscan
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_blobs

from activelab.errors import ConfigError
from activelab.strategies import get_strategy, outliers
from activelab.strategies.outliers import _hierarchy, _predict

SQRT2 = np.sqrt(2.0)
#: Layers on scales 1, 100 and 0.01. Standardised columns: [-r2, r2, 0, 0], [1, -1, -1, 1], [0, 0, -r2, r2].
ACT = np.array([[0.0, 300.0, 0.02],
                [2.0, 100.0, 0.02],
                [1.0, 100.0, 0.00],
                [1.0, 300.0, 0.04]])


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


def assert_order_free(name: str, n: int, **inputs):
    """Permuting the pool gives the same selection, mapped back, up to ties (same scores in order)."""
    n_pool = next(iter(inputs.values())).shape[0]
    perm = np.random.default_rng(n_pool).permutation(n_pool)
    original = run(name, n, **inputs)
    permuted = run(name, n, **{key: value[perm] for key, value in inputs.items()})
    np.testing.assert_allclose(permuted.scores, original.scores, rtol=1e-9, atol=1e-12)
    boundary = original.scores.min() + 1e-9
    assert (set(perm[permuted.positions[permuted.scores > boundary]].tolist())
            == set(original.positions[original.scores > boundary].tolist()))


def blob_with_outliers(n_blob: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_blob + 3, 5))
    planted = [7, n_blob // 2, n_blob + 2]
    emb[planted] = [[40.0, 0, 0, 0, 0], [0, -40.0, 0, 0, 0], [0, 0, 0, 0, 60.0]]
    return emb, planted


def points(size: int, width: int, seed: int, duplicates: bool) -> np.ndarray:
    emb = np.random.default_rng(seed).normal(size=(size, width))
    return np.round(emb) if duplicates else emb


# --- model-based outliers ------------------------------------------------------------------------------

def test_mb_outliers_mean_ranks_standardised_layers_by_hand():
    selection = run("mb_outliers_mean", 4, act_N_L=ACT)
    assert selection.positions.tolist() == [2, 0, 1, 3]
    np.testing.assert_allclose(selection.scores, [(1 + SQRT2) / 3, (SQRT2 - 1) / 3, (1 - SQRT2) / 3,
                                                  -(1 + SQRT2) / 3])
    raw_order = np.argsort(ACT.mean(axis=1)).tolist()
    assert raw_order != selection.positions.tolist()       # without standardising, layer 2 would decide


def test_mb_outliers_max_ranks_standardised_layers_by_hand():
    selection = run("mb_outliers_max", 2, act_N_L=ACT)
    assert selection.positions.tolist() == [2, 0]
    np.testing.assert_allclose(selection.scores, [0.0, -1.0])


@pytest.mark.parametrize("name", ["mb_outliers_mean", "mb_outliers_max"])
def test_mb_outliers_ignore_constant_layers_and_reject_no_layers(name):
    varying = np.array([3.0, 0.0, 4.0, 1.0, 2.0, 6.0, 5.0])
    act = np.column_stack([varying, np.full(7, 0.1)])     # std of the constant column rounds to 1e-17
    selection = run(name, 7, act_N_L=act)
    assert selection.positions.tolist() == np.argsort(varying).tolist()
    assert (run(name, 3, act_N_L=np.full((4, 2), 0.1)).scores == 0).all()
    with pytest.raises(ConfigError, match="layer"):
        run(name, 1, act_N_L=np.empty((4, 0)))


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 50), layers=st.integers(1, 4), n=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(1e-3, 1e3), name=st.sampled_from(["mb_outliers_mean", "mb_outliers_max"]))
def test_mb_outliers_properties(n_pool, layers, n, seed, scale, name):
    act = np.random.default_rng(seed).normal(size=(n_pool, layers))
    selection = assert_contract(name, n, seed, act_N_L=act)
    assert_order_free(name, n, act_N_L=act)
    rescaled = act * np.r_[scale, np.ones(layers - 1)] + 7.0
    np.testing.assert_allclose(run(name, n, seed, act_N_L=rescaled).scores, selection.scores, atol=1e-9)


# --- GLOSH ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("min_samples", [1, 3])
def test_glosh_and_labels_match_the_hdbscan_library(min_samples):
    emb, _ = make_blobs(500, n_features=4, centers=4, cluster_std=[0.5, 1.0, 2.0, 1.0], random_state=1)
    fitted, rest = emb[:350], emb[350:]
    clusterer = hdbscan.HDBSCAN(min_cluster_size=15, min_samples=min_samples, prediction_data=True).fit(fitted)
    hierarchy = _hierarchy(clusterer)
    np.testing.assert_allclose(hierarchy.glosh(hierarchy.point_node, hierarchy.point_lambda),
                               clusterer.outlier_scores_, atol=1e-12)
    labels, scores = _predict(clusterer, hierarchy, rest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_labels, _ = hdbscan.approximate_predict(clusterer, rest)
        expected_scores = hdbscan.approximate_predict_scores(clusterer, rest)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(scores, np.clip(expected_scores, 0.0, 1.0), atol=1e-12)


@pytest.mark.parametrize("max_fit", [20000, 120])
def test_outlier_finds_planted_outliers_with_and_without_subsampling(max_fit):
    emb, planted = blob_with_outliers(400, seed=0)
    selection = run("outlier", 3, emb_N_D=emb, max_fit=max_fit)
    assert sorted(selection.positions.tolist()) == sorted(planted)
    assert (selection.scores > 0.5).all()


def test_glosh_stays_defined_on_exact_duplicates():
    emb = np.concatenate([np.zeros((40, 2)), np.random.default_rng(0).normal(size=(40, 2)), [[30.0, 30.0]]])
    selection = run("outlier", 81, emb_N_D=emb)
    assert np.isfinite(selection.scores).all()
    assert selection.positions[0] == 80
    assert (selection.scores[np.isin(selection.positions, np.arange(40))] == 0).all()   # the library gives NaN


@settings(max_examples=30, deadline=None)
@given(n_pool=st.integers(1, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       duplicates=st.booleans(), max_fit=st.sampled_from([20000, 25]))
def test_outlier_properties(n_pool, width, n, seed, duplicates, max_fit):
    emb = points(n_pool, width, seed, duplicates)
    selection = assert_contract("outlier", n, seed, emb_N_D=emb, max_fit=max_fit)
    assert ((selection.scores >= 0) & (selection.scores <= 1)).all()


@settings(max_examples=20, deadline=None)
@given(n_pool=st.integers(2, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_outlier_is_invariant_to_the_order_of_the_pool(n_pool, width, n, seed):
    assert_order_free("outlier", n, emb_N_D=points(n_pool, width, seed, False))


# --- cluster_outlier_combined --------------------------------------------------------------------------

def test_cluster_outlier_combined_covers_every_cluster_first():
    emb, blob = make_blobs(600, n_features=3, centers=3, cluster_std=0.6, random_state=4)
    labels, _ = outliers.hdbscan_glosh(emb, np.arange(600), min_cluster_size=30, min_samples=1)
    groups = np.unique(labels)
    selection = run("cluster_outlier_combined", 2 * groups.size, emb_N_D=emb)
    first_round = labels[selection.positions[:groups.size]]
    assert sorted(first_round.tolist()) == groups.tolist()
    assert sorted(labels[selection.positions[groups.size:]].tolist()) == groups.tolist()
    assert set(blob[selection.positions].tolist()) == {0, 1, 2}


def test_cluster_outlier_combined_takes_outlying_items_of_each_cluster():
    emb, _ = make_blobs(600, n_features=3, centers=3, cluster_std=0.6, random_state=4)
    labels, glosh = outliers.hdbscan_glosh(emb, np.arange(600), min_cluster_size=30, min_samples=1)
    selection = run("cluster_outlier_combined", 9, emb_N_D=emb)
    for position in selection.positions:
        members = glosh[labels == labels[position]]
        assert glosh[position] >= np.quantile(members, 0.9)


@pytest.mark.parametrize("emb", [np.zeros((50, 3)),                                     # no cluster at all
                                 np.random.default_rng(0).normal(size=(3, 2)),           # too small to split
                                 np.random.default_rng(1).normal(size=(200, 2)) * 0.01])  # one blob
def test_cluster_outlier_combined_terminates_and_fills_the_budget(emb, monkeypatch):
    calls = []
    original = outliers.hdbscan_glosh
    monkeypatch.setattr(outliers, "hdbscan_glosh", lambda *a, **k: calls.append(k) or original(*a, **k))
    n = min(10, emb.shape[0])
    selection = run("cluster_outlier_combined", n, emb_N_D=emb)
    assert np.unique(selection.positions).size == n
    assert 1 <= len(calls) <= outliers.MAX_HALVINGS + 1


def test_cluster_outlier_combined_falls_back_to_glosh_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="activelab.strategies.outliers"):
        selection = run("cluster_outlier_combined", 10, emb_N_D=np.zeros((50, 3)))
    assert selection.positions.size == 10 and "GLOSH alone" in caplog.text


def test_cluster_outlier_combined_subsamples_large_pools():
    emb, blob = make_blobs(900, n_features=3, centers=3, cluster_std=0.6, random_state=4)
    selection = run("cluster_outlier_combined", 12, emb_N_D=emb, max_fit=200)
    assert np.unique(selection.positions).size == 12 and set(blob[selection.positions].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("seed", range(3))
def test_cluster_outlier_combined_is_invariant_to_the_order_of_the_pool(seed):
    emb, _ = make_blobs(300, n_features=2, centers=3, random_state=seed)
    perm = np.random.default_rng(seed).permutation(300)
    original = run("cluster_outlier_combined", 20, emb_N_D=emb)
    permuted = run("cluster_outlier_combined", 20, emb_N_D=emb[perm])
    np.testing.assert_allclose(permuted.scores, original.scores, atol=1e-12)
    unique = np.unique(original.scores, return_counts=True)
    once = np.isin(original.scores, unique[0][unique[1] == 1])
    assert set(perm[permuted.positions[once]].tolist()) == set(original.positions[once].tolist())


@pytest.mark.parametrize("option, value", [("min_cluster_size", 1), ("min_samples", 0), ("max_fit", 1.5)])
def test_hdbscan_options_are_checked(option, value):
    with pytest.raises(ConfigError, match=option):
        run("cluster_outlier_combined", 2, emb_N_D=np.zeros((5, 2)), **{option: value})


@settings(max_examples=30, deadline=None)
@given(n_pool=st.integers(1, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       duplicates=st.booleans(), max_fit=st.sampled_from([20000, 25]))
def test_cluster_outlier_combined_properties(n_pool, width, n, seed, duplicates, max_fit):
    assert_contract("cluster_outlier_combined", n, seed, emb_N_D=points(n_pool, width, seed, duplicates),
                    max_fit=max_fit)

