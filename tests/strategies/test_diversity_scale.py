"""CoreSet and BADGE in float32 and in chunks, and the fit bound of TypiClust and HDBSCAN on big pools.

float32 pools must pick what float64 pools pick on well-separated data, chunked runs must equal
unchunked ones, duplicates must stay at distance exactly 0 in float32, and above ``max_fit`` the
clustering strategies must stay deterministic for a seed without a pool-sized float64 copy.
"""

from __future__ import annotations

import tracemalloc

import hdbscan
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs

from activelab.strategies import base, diversity, get_strategy, outliers
from activelab.strategies.diversity import NearestCentre, min_sq_distances


def run(name: str, n: int, seed: int = 0, **inputs):
    return get_strategy(name)(n, rng=np.random.default_rng(seed), **inputs)


def separated(n_rows: int, width: int, seed: int) -> np.ndarray:
    """Tight, well-separated blobs, exactly representable in float32."""
    emb, _ = make_blobs(n_rows, n_features=width, centers=n_rows // 20, cluster_std=0.3, center_box=(-50, 50),
                        random_state=seed)
    return emb.astype(np.float32).astype(np.float64)


def rounding_bound(points: np.ndarray, centres: np.ndarray) -> float:
    """The float32 expansion's error bound on a squared distance, ``2 (D + 2) eps (max |x|^2 + max |c|^2)``."""
    norms = (points.astype(np.float64) ** 2).sum(axis=1).max() + (centres.astype(np.float64) ** 2).sum(axis=1).max()
    return 2 * (points.shape[1] + 2) * float(np.finfo(np.float32).eps) * norms


def peak_extra_bytes(call) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - before


def kmeanspp_reference(grads: np.ndarray, n: int, seed: int) -> list[int]:
    """k-means++ from the largest norm with the full float64 distance matrix and BADGE's draws."""
    rng = np.random.default_rng(seed)
    distances = cdist(grads, grads, "sqeuclidean")
    chosen = [int(np.argmax((grads ** 2).sum(axis=1)))]
    while len(chosen) < n:
        cdf = np.cumsum(distances[:, chosen].min(axis=1))
        if cdf[-1] > 0:
            chosen.append(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")))
        else:
            chosen.append(int(rng.choice(np.setdiff1d(np.arange(grads.shape[0]), chosen))))
    return chosen


# --- float32 against float64 ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_float32_coreset_picks_the_same_items_as_float64(seed):
    emb = separated(4000, 16, seed)
    labelled = emb[:10] + 0.5
    wide = run("coreset", 150, emb_N_D=emb, labelled_emb_M_D=labelled)
    narrow = run("coreset", 150, emb_N_D=emb.astype(np.float32), labelled_emb_M_D=labelled.astype(np.float32))
    assert narrow.positions.tolist() == wide.positions.tolist()
    np.testing.assert_allclose(narrow.scores, wide.scores, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_badge_float32_and_float64_draw_what_a_dense_k_means_plus_plus_draws(seed):
    grads = separated(1500, 12, seed)
    expected = kmeanspp_reference(grads, 60, seed)
    assert run("badge", 60, seed, grad_emb_N_D=grads).positions.tolist() == expected
    assert run("badge", 60, seed, grad_emb_N_D=grads.astype(np.float32)).positions.tolist() == expected


def test_badge_falls_back_to_uniform_draws_as_the_reference_does():
    grads = np.repeat(np.eye(3), 4, axis=0).astype(np.float32)     # three distinct rows, four copies each
    for seed in range(5):
        assert run("badge", 7, seed, grad_emb_N_D=grads).positions.tolist() == kmeanspp_reference(
            grads.astype(np.float64), 7, seed)


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(1, 30), n_centres=st.integers(1, 30), width=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 1e3]))
def test_float32_distances_are_within_their_bound_and_exact_at_zero(n_rows, n_centres, width, seed, offset):
    rng = np.random.default_rng(seed)
    emb = (rng.normal(size=(n_rows, width)) + offset).astype(np.float32)
    centres = np.concatenate([emb[: n_centres // 2], (rng.normal(size=(n_centres - n_centres // 2, width))
                                                      + offset).astype(np.float32)])
    emb[-1] = np.nextafter(centres[0], np.float32(np.inf))           # one ulp away from a centre, per coordinate
    expected = cdist(emb.astype(np.float64), centres.astype(np.float64), "sqeuclidean").min(axis=1)
    result = min_sq_distances(emb, centres)
    assert np.abs(result - expected).max() <= rounding_bound(emb, centres)
    assert (result[expected == 0] == 0).all() and (result[expected > 0] > 0).all()


def test_float32_coreset_keeps_duplicates_of_labelled_items_last_despite_cancellation():
    rng = np.random.default_rng(0)
    labelled = (rng.normal(size=(5, 64)) + 1e3).astype(np.float32)   # |x|^2 ~ 6e7: float32 cancellation
    nudged = labelled[:2].copy()
    nudged[:, 0] = np.nextafter(nudged[:, 0], np.float32(np.inf))
    pool = np.concatenate([labelled, nudged, (rng.normal(size=(20, 64)) + 1e3).astype(np.float32)])
    selection = run("coreset", 27, emb_N_D=pool, labelled_emb_M_D=labelled)
    assert set(selection.positions[-5:].tolist()) == set(range(5))
    assert (selection.scores[-5:] == 0).all() and (selection.scores[:-5] > 0).all()
    assert set(selection.positions[-7:-5].tolist()) == {5, 6}          # one ulp away: tiny but positive


# --- chunked against unchunked -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_coreset_and_badge_equal_the_unchunked_runs(dtype, monkeypatch):
    emb = separated(2000, 24, 1).astype(dtype)
    labelled = emb[:1500:50] + dtype(0.25)
    whole_coreset = run("coreset", 80, emb_N_D=emb, labelled_emb_M_D=labelled)
    whole_badge = run("badge", 80, 3, grad_emb_N_D=emb)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 97)
    monkeypatch.setattr(diversity, "CENTRE_BLOCK", 7)
    monkeypatch.setattr(diversity, "NORM_BLOCK_ELEMENTS", 50)
    chunked_coreset = run("coreset", 80, emb_N_D=emb, labelled_emb_M_D=labelled)
    chunked_badge = run("badge", 80, 3, grad_emb_N_D=emb)
    assert chunked_coreset.positions.tolist() == whole_coreset.positions.tolist()
    assert chunked_badge.positions.tolist() == whole_badge.positions.tolist()
    tolerance = rounding_bound(emb, emb)
    np.testing.assert_allclose(chunked_coreset.scores ** 2, whole_coreset.scores ** 2, atol=tolerance)
    np.testing.assert_allclose(chunked_badge.scores[1:] ** 2, whole_badge.scores[1:] ** 2, atol=tolerance)
    assert chunked_badge.scores[0] == whole_badge.scores[0]


def test_nearest_centre_adds_blocks_of_centres_as_it_adds_them_one_by_one():
    emb = separated(600, 8, 2).astype(np.float32)
    centres = emb[::37]
    blocked, single = NearestCentre(emb), NearestCentre(emb)
    blocked.add(centres)
    for row in centres:
        single.add(row[None])
    assert blocked.nearest_N.dtype == np.float32 and blocked.points is emb   # float32 pool used in place
    np.testing.assert_allclose(blocked.nearest_N, single.nearest_N, atol=rounding_bound(emb, centres))
    np.testing.assert_array_equal(blocked.nearest_N == 0, single.nearest_N == 0)


def test_coreset_memory_is_a_few_pool_vectors(monkeypatch):
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 2**18)
    emb = np.random.default_rng(0).standard_normal((200_000, 32), dtype=np.float32)
    labelled = emb[:50] + np.float32(0.5)
    extra = peak_extra_bytes(lambda: run("coreset", 20, emb_N_D=emb, labelled_emb_M_D=labelled))
    assert extra < 24 * emb.shape[0] + 2**21    # float64 norms, float32 norms, distances, one temporary


# --- TypiClust and HDBSCAN: fitted on at most max_fit items --------------------------------------------

def test_the_fit_bound_is_one_documented_default():
    strategies = {name: get_strategy(name) for name in ("typiclust", "outlier", "cluster_outlier_combined")}
    assert diversity.DEFAULT_MAX_FIT == 20_000
    for strategy in strategies.values():
        assert strategy.options["max_fit"] == diversity.DEFAULT_MAX_FIT
        assert "max_fit" in strategy.select.__doc__ and "20,000" in strategy.select.__doc__


@pytest.mark.parametrize("name", ["typiclust", "outlier", "cluster_outlier_combined"])
def test_up_to_the_bound_the_whole_pool_is_fitted(name):
    emb, _ = make_blobs(300, n_features=3, centers=4, cluster_std=0.5, random_state=0)
    inputs = {"emb_N_D": emb[20:], "labelled_emb_M_D": emb[:20]} if name == "typiclust" else {"logits_N_C": emb}
    at_bound = run(name, 12, 4, max_fit=300, **inputs)
    default = run(name, 12, 4, **inputs)
    np.testing.assert_array_equal(at_bound.positions, default.positions)
    np.testing.assert_array_equal(at_bound.scores, default.scores)


def test_up_to_the_bound_outlier_scores_are_the_libraries_on_the_whole_pool():
    logits, _ = make_blobs(400, n_features=3, centers=3, cluster_std=[0.5, 1.0, 2.0], random_state=2)
    clusterer = hdbscan.HDBSCAN(min_cluster_size=outliers._effective_min_cluster_size(100, 400), min_samples=1)
    expected = clusterer.fit(logits).outlier_scores_
    selection = run("outlier", 400, logits_N_C=logits, max_fit=400)
    np.testing.assert_allclose(selection.scores, expected[selection.positions], atol=1e-12)
    np.testing.assert_allclose(selection.scores, np.sort(expected)[::-1], atol=1e-12)


@pytest.mark.parametrize("name", ["typiclust", "outlier", "cluster_outlier_combined"])
def test_above_the_bound_selection_is_deterministic_per_seed_without_a_pool_sized_copy(name, monkeypatch):
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 2**14)      # placement chunks well below the pool
    emb, _ = make_blobs(30_000, n_features=16, centers=6, cluster_std=1.0, random_state=1)
    emb = emb.astype(np.float32)
    inputs = {"emb_N_D": emb, "labelled_emb_M_D": emb[:10] + 0.1} if name == "typiclust" else {"logits_N_C": emb}
    first = run(name, 20, 5, max_fit=300, **inputs)
    extra = peak_extra_bytes(lambda: run(name, 20, 5, max_fit=300, **inputs))
    other_seed = run(name, 20, 6, max_fit=300, **inputs)
    np.testing.assert_array_equal(run(name, 20, 5, max_fit=300, **inputs).positions, first.positions)
    assert np.unique(first.positions).size == 20
    assert first.positions.tolist() != other_seed.positions.tolist()
    assert extra < emb.size * 8 // 2     # well below one float64 copy of the pool (what a full fit converts)
