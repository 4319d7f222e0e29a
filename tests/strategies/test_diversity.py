"""CoreSet, BADGE and TypiClust: hand-made answers, a brute-force reference, and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs

from activelab.errors import ConfigError
from activelab.strategies import base, get_strategy
from activelab.strategies.diversity import min_sq_distances, typicality


def run(name: str, n: int, seed: int = 0, **inputs):
    return get_strategy(name)(n, rng=np.random.default_rng(seed), **inputs)


def assert_contract(name: str, n: int, seed: int, **inputs):
    """n unique in-range positions, the whole pool when n >= N, same seed same result, no mutation."""
    before = {key: value.copy() for key, value in inputs.items()}
    first, again = run(name, n, seed, **inputs), run(name, n, seed, **inputs)
    n_pool = next(value.shape[0] for key, value in inputs.items() if key != "labelled_emb_M_D")
    positions = first.positions
    assert positions.dtype == np.int64 and positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert ((positions >= 0) & (positions < n_pool)).all()
    if n >= n_pool:
        assert sorted(positions.tolist()) == list(range(n_pool))
    np.testing.assert_array_equal(again.positions, positions)
    np.testing.assert_array_equal(again.scores, first.scores)
    for key, value in inputs.items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{name} mutated {key}")
    return first


def points(n_rows: int, width: int, seed: int, duplicates: bool) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(n_rows, width))
    return np.round(values) if duplicates else values


def greedy_reference(emb: np.ndarray, labelled: np.ndarray, n: int) -> list[int]:
    """k-center greedy with the full distance matrix (test sizes only)."""
    nearest = cdist(emb, labelled).min(axis=1)
    chosen = []
    for _ in range(n):
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, cdist(emb, emb[chosen[-1:]])[:, 0])
    return chosen


def covering_radius(emb: np.ndarray, centres: np.ndarray) -> float:
    return float(np.sqrt(min_sq_distances(emb, centres).max()))


# --- CoreSet -------------------------------------------------------------------------------------------

def test_coreset_picks_the_farthest_point_then_the_next():
    selection = run("coreset", 2, emb_N_D=np.array([[0.0], [1.0], [10.0]]), labelled_emb_M_D=np.array([[0.0]]))
    assert selection.positions.tolist() == [2, 1]
    assert selection.scores.tolist() == [10.0, 1.0]


def test_coreset_without_labelled_items_starts_from_a_random_centre():
    emb = np.array([[0.0], [1.0], [10.0], [11.0]])
    selection = run("coreset", 4, seed=3, emb_N_D=emb, labelled_emb_M_D=np.empty((0, 1)))
    first = int(selection.positions[0])
    assert np.isnan(selection.scores[0])
    assert selection.positions[1:].tolist() == greedy_reference(emb, emb[[first]], 4)[:3]
    starts = {int(run("coreset", 1, seed=seed, emb_N_D=emb, labelled_emb_M_D=np.empty((0, 1))).positions[0])
              for seed in range(20)}
    assert len(starts) > 1


def test_coreset_takes_labelled_duplicates_in_the_pool_last():
    rng = np.random.default_rng(0)
    labelled = rng.normal(size=(5, 3))
    pool = np.concatenate([labelled, rng.normal(size=(7, 3)) + 4.0])
    order = rng.permutation(12)
    emb = pool[order]
    selection = run("coreset", 12, emb_N_D=emb, labelled_emb_M_D=labelled)
    is_labelled = order < 5
    assert not is_labelled[selection.positions[:7]].any()
    assert is_labelled[selection.positions[7:]].all()
    assert (selection.scores[7:] == 0.0).all() and (selection.scores[:7] > 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_coreset_matches_a_brute_force_reference_with_tiny_chunks(seed, monkeypatch):
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 64)
    rng = np.random.default_rng(seed)
    emb, labelled = rng.normal(size=(150, 5)), rng.normal(size=(9, 5))
    selection = run("coreset", 20, emb_N_D=emb.astype(np.float32), labelled_emb_M_D=labelled.astype(np.float32))
    expected = greedy_reference(emb.astype(np.float32).astype(np.float64),
                                labelled.astype(np.float32).astype(np.float64), 20)
    assert selection.positions.tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_coreset_covers_clustered_data_better_than_random(seed):
    emb, _ = make_blobs(1500, n_features=8, centers=12, cluster_std=1.0, random_state=seed)
    labelled = emb[:10]
    pool = emb[10:]
    chosen = run("coreset", 40, seed, emb_N_D=pool, labelled_emb_M_D=labelled).positions
    randomly = run("random", 40, seed, n_pool=pool.shape[0]).positions
    coreset_radius = covering_radius(pool, np.concatenate([labelled, pool[chosen]]))
    random_radius = covering_radius(pool, np.concatenate([labelled, pool[randomly]]))
    assert coreset_radius <= random_radius


def test_coreset_runs_on_a_large_pool_in_bounded_memory():
    emb = np.random.default_rng(0).normal(size=(200_000, 32)).astype(np.float32)
    selection = run("coreset", 50, emb_N_D=emb, labelled_emb_M_D=emb[:100])
    assert selection.positions.size == 50 and np.all(np.diff(selection.scores) <= 0)


def test_coreset_rejects_labelled_embeddings_of_another_width():
    with pytest.raises(ConfigError, match="width"):
        run("coreset", 1, emb_N_D=np.zeros((3, 2)), labelled_emb_M_D=np.zeros((1, 3)))


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 40), width=st.integers(1, 4), n_labelled=st.integers(0, 5), n=st.integers(1, 50),
       seed=st.integers(0, 2**32 - 1), duplicates=st.booleans())
def test_coreset_properties(n_pool, width, n_labelled, n, seed, duplicates):
    emb = points(n_pool, width, seed, duplicates)
    labelled = points(n_labelled, width, seed + 1, duplicates)
    selection = assert_contract("coreset", n, seed, emb_N_D=emb, labelled_emb_M_D=labelled)
    scores = selection.scores[1:] if n_labelled == 0 else selection.scores
    assert np.all(np.diff(scores) <= 1e-9) and np.all(scores >= 0)


@settings(max_examples=40, deadline=None)
@given(n_pool=st.integers(2, 40), width=st.integers(1, 4), n_labelled=st.integers(1, 5), n=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1))
def test_coreset_is_invariant_to_the_order_of_the_pool(n_pool, width, n_labelled, n, seed):
    emb, labelled = points(n_pool, width, seed, False), points(n_labelled, width, seed + 1, False)
    perm = np.random.default_rng(seed).permutation(n_pool)
    original = run("coreset", n, emb_N_D=emb, labelled_emb_M_D=labelled).positions
    permuted = run("coreset", n, emb_N_D=emb[perm], labelled_emb_M_D=labelled).positions
    assert perm[permuted].tolist() == original.tolist()


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(1, 30), n_centres=st.integers(1, 30), width=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1), duplicates=st.booleans())
def test_min_sq_distances_matches_cdist_and_is_exactly_zero_on_duplicates(n_rows, n_centres, width, seed,
                                                                          duplicates):
    emb = points(n_rows, width, seed, duplicates) * 100.0
    centres = np.concatenate([emb[: n_centres // 2], points(n_centres - n_centres // 2, width, seed + 1, duplicates)])
    expected = cdist(emb, centres, "sqeuclidean").min(axis=1)
    result = min_sq_distances(emb, centres)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-9)
    assert (result[expected == 0] == 0).all()


# --- BADGE ---------------------------------------------------------------------------------------------

def test_badge_starts_at_the_largest_gradient_and_never_draws_a_duplicate_of_a_centre():
    grads = np.array([[10.0, 0.0], [10.0, 0.0], [0.0, 1.0]])
    for seed in range(10):
        selection = run("badge", 2, seed, grad_emb_N_D=grads)
        assert selection.positions.tolist() == [0, 2]
        np.testing.assert_allclose(selection.scores, [10.0, np.sqrt(101.0)])


def test_badge_covers_every_distinct_gradient_before_any_repeat():
    distinct = np.random.default_rng(0).normal(size=(4, 3))
    grads = np.repeat(distinct, 5, axis=0)
    for seed in range(10):
        positions = run("badge", 4, seed, grad_emb_N_D=grads).positions
        assert sorted((positions // 5).tolist()) == [0, 1, 2, 3]


def test_badge_draws_proportionally_to_squared_distance():
    grads = np.array([[3.0], [0.0], [1.0]])          # after the centre 3: distances^2 are 9 and 4
    seconds = [int(run("badge", 2, seed, grad_emb_N_D=grads).positions[1]) for seed in range(400)]
    assert 0.55 < seconds.count(1) / 400 < 0.83        # expected 9 / 13 = 0.69


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 40), width=st.integers(1, 6), n=st.integers(1, 50),
       seed=st.integers(0, 2**32 - 1), duplicates=st.booleans())
def test_badge_properties(n_pool, width, n, seed, duplicates):
    assert_contract("badge", n, seed, grad_emb_N_D=points(n_pool, width, seed, duplicates))


# --- TypiClust -----------------------------------------------------------------------------------------

BLOB_A = np.arange(9.0)[:, None]                 # 0..8, most typical 4
BLOB_B = np.arange(100.0, 107.0)[:, None]        # 100..106, most typical 103


def test_typiclust_picks_the_most_typical_item_of_the_uncovered_cluster():
    emb = np.concatenate([BLOB_A, BLOB_B])
    selection = run("typiclust", 1, emb_N_D=emb, labelled_emb_M_D=np.array([[4.5]]))
    assert selection.positions.tolist() == [9 + 3]
    np.testing.assert_allclose(selection.scores, [0.5])   # mean distance to the 6 others is 2


def test_typiclust_takes_the_larger_cluster_first_without_labels():
    emb = np.concatenate([BLOB_B, BLOB_A])
    selection = run("typiclust", 2, emb_N_D=emb, labelled_emb_M_D=np.empty((0, 1)))
    assert selection.positions.tolist() == [7 + 4, 3]


def test_typiclust_survives_duplicates_and_one_item_clusters():
    emb = np.concatenate([np.zeros((30, 2)), [[50.0, 50.0], [-50.0, 50.0], [50.0, -50.0]]])
    for n in (1, 5, 33):
        selection = run("typiclust", n, emb_N_D=emb, labelled_emb_M_D=np.zeros((2, 2)))
        assert np.unique(selection.positions).size == n
    assert np.isinf(typicality(np.zeros((4, 2)))).all()
    assert typicality(np.ones((1, 2))).tolist() == [0.0]


def test_typiclust_subsamples_large_clusters():
    emb, _ = make_blobs(600, n_features=3, centers=3, random_state=0)
    selection = run("typiclust", 30, emb_N_D=emb, labelled_emb_M_D=emb[:5], max_fit=50)
    assert np.unique(selection.positions).size == 30


@settings(max_examples=30, deadline=None)
@given(n_pool=st.integers(1, 40), width=st.integers(1, 4), n_labelled=st.integers(0, 5), n=st.integers(1, 50),
       seed=st.integers(0, 2**32 - 1), duplicates=st.booleans())
def test_typiclust_properties(n_pool, width, n_labelled, n, seed, duplicates):
    assert_contract("typiclust", n, seed, emb_N_D=points(n_pool, width, seed, duplicates),
                    labelled_emb_M_D=points(n_labelled, width, seed + 1, duplicates))
