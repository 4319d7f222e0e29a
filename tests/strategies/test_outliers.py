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
from activelab.strategies import get_strategy, outliers, registry
from activelab.strategies.outliers import _hierarchy, _predict

SQRT2 = np.sqrt(2.0)
#: Layers on scales 1, 100 and 0.01. Standardised columns: [-r2, r2, 0, 0], [1, -1, -1, 1], [0, 0, -r2, r2].
#: Raw row means: 100.01, 34.01, 33.67, 100.35 (the scale-100 layer decides).
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
    arrays = {key: value for key, value in inputs.items() if isinstance(value, np.ndarray)}
    options = {key: value for key, value in inputs.items() if key not in arrays}
    n_pool = next(iter(arrays.values())).shape[0]
    perm = np.random.default_rng(n_pool).permutation(n_pool)
    original = run(name, n, **inputs)
    permuted = run(name, n, **{key: value[perm] for key, value in arrays.items()}, **options)
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

MB = {"mb_outliers_mean": "act_mean_N_L", "mb_outliers_max": "act_max_N_L"}


def test_model_based_outliers_read_the_layer_summary_they_combine():
    assert registry()["mb_outliers_mean"].needs == ("act_mean_N_L",)
    assert registry()["mb_outliers_max"].needs == ("act_max_N_L",)
    for name in ("mb_outliers_mean_least_confidence", "mb_outliers_mean_entropy"):
        assert set(registry()[name].needs) == {"act_mean_N_L", "probs_N_C"}
    with pytest.raises(ConfigError, match="needs the input.*act_max_N_L"):
        run("mb_outliers_max", 1, act_mean_N_L=ACT)


def test_mb_outliers_mean_ranks_standardised_layers_by_hand():
    selection = run("mb_outliers_mean", 4, act_mean_N_L=ACT)
    assert selection.positions.tolist() == [2, 0, 1, 3]
    np.testing.assert_allclose(selection.scores, [(1 + SQRT2) / 3, (SQRT2 - 1) / 3, (1 - SQRT2) / 3,
                                                  -(1 + SQRT2) / 3])


def test_mb_outliers_mean_raw_is_the_lowest_mean_of_layer_means():
    selection = run("mb_outliers_mean", 4, act_mean_N_L=ACT, standardise=False)
    assert selection.positions.tolist() == [2, 1, 0, 3]          # layer 2 (scale 100) alone decides
    np.testing.assert_allclose(selection.scores, -ACT[[2, 1, 0, 3]].mean(axis=1))


def test_mb_outliers_max_ranks_standardised_layers_by_hand():
    selection = run("mb_outliers_max", 2, act_max_N_L=ACT)
    assert selection.positions.tolist() == [2, 0]
    np.testing.assert_allclose(selection.scores, [0.0, -1.0])


def test_mb_outliers_max_raw_is_the_lowest_max_of_layer_maxima():
    act_max = np.array([[1.0, 5.0, 2.0], [3.0, 4.0, 0.0], [0.5, 6.0, 1.0], [2.0, 2.0, 2.0]])
    selection = run("mb_outliers_max", 4, act_max_N_L=act_max, standardise=False)
    assert selection.positions.tolist() == [3, 1, 0, 2]
    np.testing.assert_allclose(selection.scores, [-2.0, -4.0, -5.0, -6.0])


@pytest.mark.parametrize("name", MB)
def test_mb_outliers_ignore_constant_layers_and_reject_no_layers(name):
    key = MB[name]
    varying = np.array([3.0, 0.0, 4.0, 1.0, 2.0, 6.0, 5.0])
    act = np.column_stack([varying, np.full(7, 0.1)])     # std of the constant column rounds to 1e-17
    selection = run(name, 7, **{key: act})
    assert selection.positions.tolist() == np.argsort(varying).tolist()
    assert (run(name, 3, **{key: np.full((4, 2), 0.1)}).scores == 0).all()
    for standardise in (True, False):
        with pytest.raises(ConfigError, match="layer"):
            run(name, 1, standardise=standardise, **{key: np.empty((4, 0))})


@pytest.mark.parametrize("name", MB)
@pytest.mark.parametrize("value", ["no", 1, None])
def test_standardise_option_is_checked(name, value):
    with pytest.raises(ConfigError, match="standardise"):
        run(name, 1, standardise=value, **{MB[name]: ACT})


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 50), layers=st.integers(1, 4), n=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(1e-3, 1e3), name=st.sampled_from(sorted(MB)), standardise=st.booleans())
def test_mb_outliers_properties(n_pool, layers, n, seed, scale, name, standardise):
    key = MB[name]
    act = np.random.default_rng(seed).normal(size=(n_pool, layers))
    selection = assert_contract(name, n, seed, standardise=standardise, **{key: act})
    assert_order_free(name, n, standardise=standardise, **{key: act})
    if standardise:     # each layer's scale and offset do not matter
        rescaled = act * np.r_[scale, np.ones(layers - 1)] + 7.0
        np.testing.assert_allclose(run(name, n, seed, **{key: rescaled}).scores, selection.scores, atol=1e-9)
    else:
        combined = act.mean(axis=1) if name == "mb_outliers_mean" else act.max(axis=1)
        np.testing.assert_allclose(selection.scores, -combined[selection.positions])
        assert np.all(np.diff(selection.scores) <= 0)


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


def test_hdbscan_strategies_cluster_the_logits():
    for name in ("outlier", "cluster_outlier_combined"):
        assert registry()[name].needs == ("logits_N_C",)
    with pytest.raises(ConfigError, match="needs the input.*logits_N_C"):
        run("outlier", 1, emb_N_D=np.zeros((5, 2)))


@pytest.mark.parametrize("max_fit", [20000, 120])
def test_outlier_finds_planted_outliers_with_and_without_subsampling(max_fit):
    emb, planted = blob_with_outliers(400, seed=0)
    selection = run("outlier", 3, logits_N_C=emb, max_fit=max_fit)
    assert sorted(selection.positions.tolist()) == sorted(planted)
    assert (selection.scores > 0.5).all()


def test_glosh_stays_defined_on_exact_duplicates():
    emb = np.concatenate([np.zeros((40, 2)), np.random.default_rng(0).normal(size=(40, 2)), [[30.0, 30.0]]])
    selection = run("outlier", 81, logits_N_C=emb)
    assert np.isfinite(selection.scores).all()
    assert selection.positions[0] == 80
    assert (selection.scores[np.isin(selection.positions, np.arange(40))] == 0).all()   # the library gives NaN


@settings(max_examples=30, deadline=None)
@given(n_pool=st.integers(1, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       duplicates=st.booleans(), max_fit=st.sampled_from([20000, 25]))
def test_outlier_properties(n_pool, width, n, seed, duplicates, max_fit):
    emb = points(n_pool, width, seed, duplicates)
    selection = assert_contract("outlier", n, seed, logits_N_C=emb, max_fit=max_fit)
    assert ((selection.scores >= 0) & (selection.scores <= 1)).all()


@settings(max_examples=20, deadline=None)
@given(n_pool=st.integers(2, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_outlier_is_invariant_to_the_order_of_the_pool(n_pool, width, n, seed):
    assert_order_free("outlier", n, logits_N_C=points(n_pool, width, seed, False))


# --- cluster_outlier_combined --------------------------------------------------------------------------

def three_blobs(n_items: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three well-separated blobs, with the labels and GLOSH scores the strategy's first fit gives them."""
    logits, _ = make_blobs(n_items, n_features=3, centers=3, cluster_std=0.6, random_state=4)
    size = outliers._effective_min_cluster_size(100, n_items)
    labels, glosh = outliers.hdbscan_glosh(logits, np.arange(n_items), min_cluster_size=size, min_samples=1)
    assert np.unique(labels[labels >= 0]).size == 3
    return logits, labels, glosh


def outlier_counts(positions: np.ndarray, labels: np.ndarray, glosh: np.ndarray) -> dict[int, tuple[int, int]]:
    """(picks at or above the cluster's 0.9 GLOSH quantile, picks below it) for every cluster."""
    counts = {}
    for label in np.unique(labels[labels >= 0]):
        picked = positions[labels[positions] == label]
        above = glosh[picked] >= np.quantile(glosh[labels == label], 0.9)
        counts[int(label)] = (int(above.sum()), int((~above).sum()))
    return counts


def test_cluster_outlier_combined_draws_20_percent_outliers_and_80_percent_regular_items():
    logits, labels, glosh = three_blobs()
    selection = run("cluster_outlier_combined", 30, logits_N_C=logits)
    assert outlier_counts(selection.positions, labels, glosh) == {0: (2, 8), 1: (2, 8), 2: (2, 8)}
    np.testing.assert_array_equal(selection.scores, glosh[selection.positions])


def test_cluster_outlier_combined_spreads_the_budget_evenly_remainder_first():
    logits, labels, glosh = three_blobs()
    selection = run("cluster_outlier_combined", 32, logits_N_C=logits)
    assert outlier_counts(selection.positions, labels, glosh) == {0: (2, 9), 1: (2, 9), 2: (2, 8)}
    assert labels[selection.positions].tolist() == [0] * 11 + [1] * 11 + [2] * 10   # drawn cluster by cluster
    small = run("cluster_outlier_combined", 2, logits_N_C=logits)
    assert labels[small.positions].tolist() == [0, 1]                               # a share of 1 is regular


def test_draw_from_clusters_passes_a_shortfall_on_then_fills_from_the_pool():
    glosh = np.linspace(0.0, 0.5, 60)
    small, large = np.arange(0, 5), np.arange(5, 40)
    chosen = outliers.draw_from_clusters([small, large], glosh, 20, rng=np.random.default_rng(0))
    assert chosen.size == 20 and np.unique(chosen).size == 20
    assert sorted(chosen[:5].tolist()) == small.tolist()       # share 10, only 5 items: 5 passed on
    assert np.isin(chosen[5:], large).all()                    # 15 from the second cluster, no pool fill
    above = glosh[chosen[5:]] >= np.quantile(glosh[large], 0.9)
    assert above.sum() == 3                                    # 20 % of its share of 15
    tiny = outliers.draw_from_clusters([np.arange(0, 4), np.arange(4, 8)], glosh, 20, rng=np.random.default_rng(0))
    assert sorted(tiny[:8].tolist()) == list(range(8))
    assert np.unique(tiny).size == 20 and (tiny[8:] >= 8).all()  # the 12 missing come from the rest of the pool


def test_a_cluster_whose_quantile_is_zero_is_split_20_80_at_random():
    glosh = np.zeros(50)
    members = np.arange(10, 20)
    splits = [outliers.split_outliers(members, glosh, rng=np.random.default_rng(seed)) for seed in range(4)]
    for marked, rest in splits:
        assert marked.size == 2 and rest.size == 8
        assert sorted(np.concatenate([marked, rest]).tolist()) == members.tolist()
    assert len({tuple(marked.tolist()) for marked, _ in splits}) > 1


def test_cluster_outlier_combined_is_random_per_seed_and_uses_no_global_state():
    logits, labels, glosh = three_blobs()
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    first = run("cluster_outlier_combined", 30, 1, logits_N_C=logits)
    again = run("cluster_outlier_combined", 30, 1, logits_N_C=logits)
    other = run("cluster_outlier_combined", 30, 2, logits_N_C=logits)
    np.testing.assert_array_equal(first.positions, again.positions)
    assert set(first.positions.tolist()) != set(other.positions.tolist())
    assert outlier_counts(other.positions, labels, glosh) == outlier_counts(first.positions, labels, glosh)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("logits", [np.zeros((50, 3)),                                     # no cluster at all
                                    np.random.default_rng(0).normal(size=(3, 2)),           # too small to split
                                    np.random.default_rng(1).normal(size=(200, 2)) * 0.01])  # one blob
def test_cluster_outlier_combined_terminates_and_fills_the_budget(logits, monkeypatch):
    sizes = []
    original = outliers.hdbscan_glosh

    def recording(*args, **kwargs):
        sizes.append(kwargs["min_cluster_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(outliers, "hdbscan_glosh", recording)
    n = min(10, logits.shape[0])
    selection = run("cluster_outlier_combined", n, logits_N_C=logits)
    assert np.unique(selection.positions).size == n
    assert 1 <= len(sizes) <= outliers.MAX_HALVINGS + 1
    assert sizes == [sizes[0]] + [max(2, sizes[0] // 2**k) for k in range(1, len(sizes))]


def test_cluster_outlier_combined_without_clusters_treats_the_pool_as_one_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="activelab.strategies.outliers"):
        selection = run("cluster_outlier_combined", 10, logits_N_C=np.zeros((50, 3)))
    assert selection.positions.size == 10 and "one cluster" in caplog.text


def test_cluster_outlier_combined_subsamples_large_pools():
    logits, blob = make_blobs(900, n_features=3, centers=3, cluster_std=0.6, random_state=4)
    selection = run("cluster_outlier_combined", 12, logits_N_C=logits, max_fit=200)
    assert np.unique(selection.positions).size == 12 and set(blob[selection.positions].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("option, value", [("min_cluster_size", 1), ("min_samples", 0), ("max_fit", 1.5)])
def test_hdbscan_options_are_checked(option, value):
    with pytest.raises(ConfigError, match=option):
        run("cluster_outlier_combined", 2, logits_N_C=np.zeros((5, 2)), **{option: value})


@settings(max_examples=30, deadline=None)
@given(n_pool=st.integers(1, 60), width=st.integers(1, 3), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       duplicates=st.booleans(), max_fit=st.sampled_from([20000, 25]))
def test_cluster_outlier_combined_properties(n_pool, width, n, seed, duplicates, max_fit):
    logits = points(n_pool, width, seed, duplicates)
    selection = assert_contract("cluster_outlier_combined", n, seed, logits_N_C=logits, max_fit=max_fit)
    assert ((selection.scores >= 0) & (selection.scores <= 1)).all()
