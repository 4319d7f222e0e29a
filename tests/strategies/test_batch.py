"""Batch-aware strategies: BatchBALD against brute force and baal, power sampling's limits, properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from baal.active.heuristics import BatchBALD
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import entr
from scipy.stats import chisquare

from activelab.errors import ConfigError
from activelab.strategies import base, batch, registry, select_top
from activelab.strategies.batch import power_sample, select_batchbald
from activelab.strategies.bayesian import expected_entropy, score_bald
from activelab.strategies.uncertainty import score_entropy, score_margin

NAMES = ["batchbald", "power_bald", "power_entropy", "power_margin"]

# A hand-made pool for BatchBALD (T=4 passes, 2 classes). A splits the passes {0,1} / {2,3} with
# certainty (BALD log 2); copies of A add nothing once one is chosen. B splits them {0,2} / {1,3}, so
# it is independent of A and keeps its whole BALD (log 2 - H(0.9)); F is nearly uninformative.
A = [[1, 0], [1, 0], [0, 1], [0, 1]]
B = [[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]
F = [[0.7, 0.3], [0.6, 0.4], [0.7, 0.3], [0.6, 0.4]]
DUPLICATES = np.array([F, A, F, A, B, A, F], dtype=np.float64).transpose(1, 0, 2)
COPIES_OF_A, POSITION_OF_B = {1, 3, 5}, 4


def random_probs(seed: int, shape: tuple[int, int, int] = (5, 8, 3)) -> np.ndarray:
    """Continuous random MC probabilities with no ties."""
    return np.random.default_rng(seed).dirichlet(np.full(shape[2], 0.5), size=shape[:2])


def joint_mutual_information(probs_T_N_C: np.ndarray, positions: list[int]) -> float:
    """``I(y_1..y_k; w)`` by enumerating every joint label configuration (tiny cases only)."""
    joint_entropy = 0.0
    for labels in itertools.product(range(probs_T_N_C.shape[2]), repeat=len(positions)):
        joint_entropy += entr(np.prod(probs_T_N_C[:, positions, labels], axis=1).mean())
    return joint_entropy - expected_entropy(probs_T_N_C)[positions].sum()


@st.composite
def mc_probabilities(draw) -> np.ndarray:
    """Small ``probs_T_N_C`` tensors full of exact 0 and 1 (all-zero rows become one-hot)."""
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 4)))
    raw = draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0])))
    raw[..., 0] += raw.sum(axis=-1) == 0
    return raw / raw.sum(axis=-1, keepdims=True)


# --- BatchBALD ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_batchbald_of_one_is_balds_top_item(seed):
    probs = random_probs(seed, shape=(6, 50, 4))
    batch = registry()["batchbald"](1, rng=np.random.default_rng(seed), probs_T_N_C=probs)
    bald = registry()["bald"](1, rng=np.random.default_rng(seed), probs_T_N_C=probs)
    assert batch.positions.tolist() == bald.positions.tolist()
    np.testing.assert_array_equal(batch.scores, bald.scores)


def test_batchbald_skips_duplicates_of_the_top_item():
    top_k = registry()["bald"](3, rng=np.random.default_rng(0), probs_T_N_C=DUPLICATES)
    assert set(top_k.positions.tolist()) == COPIES_OF_A          # top-k takes all three copies
    selection = select_batchbald(3, rng=np.random.default_rng(0), probs_T_N_C=DUPLICATES)
    first, second, third = selection.positions.tolist()
    assert first in COPIES_OF_A and second == POSITION_OF_B     # a copy of A brings nothing more
    np.testing.assert_allclose(selection.scores[:2], score_bald(DUPLICATES)[[first, second]])
    assert third not in COPIES_OF_A                              # F still adds a little; a copy adds 0


def test_batchbald_exact_mode_is_the_brute_force_greedy():
    probs = random_probs(3)
    selection = select_batchbald(4, rng=np.random.default_rng(0), probs_T_N_C=probs)
    chosen: list[int] = []
    for _ in range(4):
        rest = [i for i in range(probs.shape[1]) if i not in chosen]
        chosen.append(max(rest, key=lambda i: joint_mutual_information(probs, chosen + [i])))
    assert selection.positions.tolist() == chosen
    # Each score is the gain of its pick, so the running sum is the batch's joint mutual information.
    expected = [joint_mutual_information(probs, chosen[:k]) for k in range(1, 5)]
    np.testing.assert_allclose(np.cumsum(selection.scores), expected, rtol=1e-10)
    assert (np.diff(selection.scores) <= 1e-12).all()            # submodular: gains never grow


def test_batchbald_sampled_mode_estimates_the_joint_mutual_information():
    # 3 ** 6 = 729 configurations > num_samples: the 7th pick is scored on 500 sampled configurations
    # (estimates within 0.01 here; drawing them while ignoring the configurations' weights errs by 0.05).
    probs = random_probs(4, shape=(5, 9, 3))
    selection = select_batchbald(7, rng=np.random.default_rng(0), probs_T_N_C=probs, num_samples=500)
    exact = joint_mutual_information(probs, selection.positions.tolist())
    assert np.sum(selection.scores) == pytest.approx(exact, abs=0.03)


def test_batchbald_stays_finite_for_long_batches():
    # A raw product of 300 probabilities underflows; the normalised pass weights do not.
    probs = random_probs(5, shape=(4, 400, 10))
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        selection = select_batchbald(300, rng=np.random.default_rng(0), probs_T_N_C=probs, num_samples=50)
    assert np.isfinite(selection.scores).all() and np.unique(selection.positions).size == 300


def test_batchbald_chunked_equals_whole(monkeypatch):
    probs = random_probs(6, shape=(5, 30, 3))
    whole = select_batchbald(5, rng=np.random.default_rng(0), probs_T_N_C=probs)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 200)
    chunked = select_batchbald(5, rng=np.random.default_rng(0), probs_T_N_C=probs)
    assert chunked.positions.tolist() == whole.positions.tolist()
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-12)


def unpruned_batchbald(n, rng, probs_T_N_C, num_samples=1000):
    """The greedy loop scoring every candidate against every configuration (BatchBALD before the bounds)."""
    n_passes, n_pool, _ = probs_T_N_C.shape
    expected_N = expected_entropy(probs_T_N_C)
    gain_N = score_bald(probs_T_N_C)
    weights_T_M, config_p_M, exact = np.ones((n_passes, 1)), np.ones(1), True
    available_N = np.ones(n_pool, dtype=bool)
    positions, gains = [], []
    for step in range(min(n, n_pool)):
        if step:
            weights_T_M, config_p_M, exact = batch._add_item(weights_T_M, config_p_M, exact,
                                                             probs_T_N_C[:, positions[-1]], num_samples, rng)
            gain_N = batch._conditional_entropy(weights_T_M, config_p_M, probs_T_N_C) - expected_N
        gain_N[~available_N] = -np.inf
        best = np.flatnonzero(gain_N == gain_N.max())
        positions.append(int(best[0] if best.size == 1 else rng.choice(best)))
        gains.append(gain_N[positions[-1]])
        available_N[positions[-1]] = False
    return positions, np.array(gains)


def pool_with_copies(seed, shape):
    """MC probabilities with a shared item part, per-pass noise and some exact copies of items (ties)."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal(shape[1:]) + rng.standard_normal(shape)
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    probs[:, rng.integers(0, shape[1], 5)] = probs[:, :1]
    return probs.astype(np.float32) if seed % 2 else probs


@pytest.mark.parametrize("seed, shape, n, num_samples", [
    (0, (20, 400, 10), 25, 1000), (1, (20, 400, 10), 25, 200), (2, (8, 300, 3), 30, 1000),
    (3, (5, 200, 4), 40, 50), (4, (12, 500, 6), 20, 400), (5, (20, 150, 2), 60, 100)])
@pytest.mark.parametrize("first", [64, 1])
def test_pruned_batchbald_equals_scoring_every_candidate(seed, shape, n, num_samples, first, monkeypatch):
    monkeypatch.setattr(batch, "FIRST_CANDIDATES", first)
    probs = pool_with_copies(seed, shape)
    pruned = select_batchbald(n, rng=np.random.default_rng(seed), probs_T_N_C=probs, num_samples=num_samples)
    positions, gains = unpruned_batchbald(n, np.random.default_rng(seed), probs, num_samples)
    assert pruned.positions.tolist() == positions
    np.testing.assert_allclose(pruned.scores, gains, rtol=1e-12, atol=1e-15)


def test_merged_configurations_bound_the_conditional_entropy_from_above():
    probs = random_probs(9, shape=(6, 40, 3))
    rng = np.random.default_rng(0)
    weights_T_M, config_p_M = rng.random((6, 300)) ** 4, rng.dirichlet(np.ones(300))
    weights_T_M /= weights_T_M.mean(axis=0)
    exact = batch._conditional_entropy(weights_T_M, config_p_M, probs)
    for depth in (1, 2):
        grouped_T_G, group_p = batch._grouped(weights_T_M, config_p_M, depth)
        assert group_p.sum() == pytest.approx(1.0) and grouped_T_G.shape[1] == group_p.size
        assert (batch._conditional_entropy(grouped_T_G, group_p, probs) >= exact - 1e-12).all()


def test_batchbald_rejects_a_bad_num_samples():
    with pytest.raises(ConfigError, match="num_samples"):
        registry()["batchbald"](2, rng=np.random.default_rng(0), probs_T_N_C=DUPLICATES, num_samples=0)


def test_baal_batchbald_picks_the_same_pair_but_returns_one_more_item_unordered():
    # baal's BatchBALD (layout [N, C, T]) starts from BALD's top item and runs `num_samples` greedy
    # steps, so it returns num_samples + 1 items; `ranks` orders them by score, not in greedy order,
    # and each score is H(y_A, y) - E H(y), the joint entropy minus the candidate's own conditional
    # entropy only (the joint mutual information here, because copies of A have no aleatoric entropy).
    # Its sampling uses torch's global generator; on this pool every estimate is exact, whatever the draw.
    ranks, baal_scores = BatchBALD(num_samples=1).get_ranks(DUPLICATES.transpose(1, 2, 0))
    picked = set(np.flatnonzero(baal_scores).tolist())
    ours = select_batchbald(2, rng=np.random.default_rng(0), probs_T_N_C=DUPLICATES)
    assert len(picked) == 2 and POSITION_OF_B in picked and len(picked & COPIES_OF_A) == 1
    assert set(ranks[:2].tolist()) == picked
    assert baal_scores[POSITION_OF_B] == pytest.approx(ours.scores.sum())


# --- power sampling -----------------------------------------------------------------------------

def test_power_sample_with_a_huge_beta_is_top_k():
    scores = np.random.default_rng(0).random(200)
    sampled = power_sample(scores, 20, rng=np.random.default_rng(1), beta=1e9)
    top = select_top(scores, 20, rng=np.random.default_rng(1))
    assert sampled.positions.tolist() == top.positions.tolist()
    np.testing.assert_array_equal(sampled.scores, top.scores)


def test_power_sample_with_beta_zero_is_uniform():
    scores = np.array([0.0, 1e-6, 0.1, 0.5, 2.0])              # even a zero score is drawn as often
    rng = np.random.default_rng(2024)
    firsts = [power_sample(scores, 1, rng=rng, beta=0.0).positions[0] for _ in range(5000)]
    counts = np.bincount(firsts, minlength=scores.size)
    assert chisquare(counts).pvalue > 0.01


def test_power_sample_draws_proportionally_to_score_power():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    rng = np.random.default_rng(7)
    firsts = [power_sample(scores, 1, rng=rng, beta=2.0).positions[0] for _ in range(5000)]
    counts = np.bincount(firsts, minlength=scores.size)
    assert chisquare(counts, 5000 * scores**2 / np.sum(scores**2)).pvalue > 0.01


def test_power_sample_puts_zero_scores_last_without_nan():
    scores = np.array([0.0, 0.3, 0.0, 1e-9, -1e-17])
    with np.errstate(all="raise"):
        selection = power_sample(scores, 5, rng=np.random.default_rng(0), beta=1.0)
    assert set(selection.positions[:2].tolist()) == {1, 3}
    np.testing.assert_array_equal(selection.scores, scores[selection.positions])


def test_power_sample_rejects_a_negative_beta():
    with pytest.raises(ConfigError, match="beta"):
        power_sample(np.ones(3), 1, rng=np.random.default_rng(0), beta=-1.0)


@pytest.mark.parametrize("name, needs, score", [
    ("power_bald", "probs_T_N_C", score_bald),
    ("power_entropy", "probs_N_C", score_entropy),
    ("power_margin", "probs_N_C", score_margin),
])
def test_power_strategies_compose_their_score(name, needs, score):
    probs_T_N_C = random_probs(8, shape=(5, 60, 3))
    probs = probs_T_N_C if needs == "probs_T_N_C" else probs_T_N_C[0]
    strategy = registry()[name]
    assert strategy.needs == (needs,) and strategy.options == {"beta": 1.0}
    selection = strategy(10, rng=np.random.default_rng(3), beta=1e9, **{needs: probs})
    top = select_top(score(probs), 10, rng=np.random.default_rng(0))
    assert selection.positions.tolist() == top.positions.tolist()
    default = strategy(10, rng=np.random.default_rng(3), **{needs: probs})
    assert default.positions.tolist() == power_sample(score(probs), 10, rng=np.random.default_rng(3),
                                                      beta=1.0).positions.tolist()


# --- properties ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options",
                         [(name, {}) for name in NAMES] + [("batchbald", {"num_samples": 3})])
@settings(max_examples=25, deadline=None)
@given(probs=mc_probabilities(), n=st.integers(1, 15), seed=st.integers(0, 2**32 - 1))
def test_selection_properties(name, options, probs, n, seed):
    n_pool = probs.shape[1]
    probs_N_C = probs.mean(axis=0)
    before = probs.copy(), probs_N_C.copy()
    probs.flags.writeable = probs_N_C.flags.writeable = False
    strategy = registry()[name]
    inputs = {"probs_T_N_C": probs, "probs_N_C": probs_N_C, **options}
    selection = strategy(n, rng=np.random.default_rng(seed), **inputs)
    again = strategy(n, rng=np.random.default_rng(seed), **inputs)
    positions = selection.positions
    assert positions.dtype == np.int64 and positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert ((positions >= 0) & (positions < n_pool)).all()
    if n >= n_pool:
        assert sorted(positions.tolist()) == list(range(n_pool))
    assert np.isfinite(selection.scores).all()
    assert np.array_equal(again.positions, positions) and np.array_equal(again.scores, selection.scores)
    np.testing.assert_array_equal(probs, before[0])
    np.testing.assert_array_equal(probs_N_C, before[1])
