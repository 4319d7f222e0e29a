"""The MC-dropout family: known answers by hand, properties, and cross-checks against baal and modAL."""

from __future__ import annotations

import numpy as np
import pytest
from baal.active.heuristics import BALD, Certainty, Entropy, Margin, Variance
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from modAL.uncertainty import (classifier_entropy, classifier_margin, classifier_uncertainty,
                               entropy_sampling, margin_sampling, uncertainty_sampling)

from activelab.strategies import base, bayesian, registry, select_top
from activelab.strategies.bayesian import (expected_entropy, score_bald, score_mc_entropy,
                                           score_mc_least_confidence, score_mc_margin, score_mc_ratio,
                                           score_mean_std, score_variation_ratios)
from activelab.strategies.uncertainty import score_entropy, score_least_confidence, score_margin, score_ratio

NAMES = ["bald", "mc_least_confidence", "mc_margin", "mc_ratio", "mc_entropy", "variation_ratios", "mean_std"]
SCORES = {name: getattr(bayesian, f"score_{name}") for name in NAMES}
LOG2 = np.log(2.0)


def items(*passes_per_item: list[list[float]]) -> np.ndarray:
    """Build ``probs_T_N_C`` from one list of per-pass probability rows per item."""
    return np.array(passes_per_item, dtype=np.float64).transpose(1, 0, 2)


def random_probs(seed: int, shape: tuple[int, int, int] = (6, 40, 4)) -> np.ndarray:
    """Continuous random MC probabilities (no ties): a shared item mean plus per-pass noise."""
    rng = np.random.default_rng(seed)
    passes, n_pool, classes = shape
    logits = 2.0 * rng.normal(size=(1, n_pool, classes)) + rng.normal(size=shape)
    probs = np.exp(logits)
    return probs / probs.sum(axis=2, keepdims=True)


@st.composite
def mc_probabilities(draw) -> np.ndarray:
    """Small ``probs_T_N_C`` tensors full of exact 0 and 1 (all-zero rows become one-hot)."""
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 4)))
    raw = draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0])))
    raw[..., 0] += raw.sum(axis=-1) == 0
    return raw / raw.sum(axis=-1, keepdims=True)


# --- known answers, by hand ---------------------------------------------------------------------

def test_bald_of_identical_passes_is_zero():
    probs = items([[0.7, 0.2, 0.1]] * 5, [[1.0, 0.0, 0.0]] * 5, [[1 / 3, 1 / 3, 1 / 3]] * 5)
    scores = score_bald(probs)
    assert (scores >= 0).all()
    np.testing.assert_allclose(scores, 0.0, atol=1e-12)


def test_bald_of_two_confident_disagreeing_passes_is_log2():
    np.testing.assert_allclose(score_bald(items([[1.0, 0.0], [0.0, 1.0]])), [LOG2])


def test_bald_averages_the_expected_entropy_over_passes_not_classes():
    # T=3 != C=2, where the seed's "sum over T, mean over C" gives log(2)/2 instead of log(2)/3.
    probs = items([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
    predictive = -(5 / 6 * np.log(5 / 6) + 1 / 6 * np.log(1 / 6))   # entropy of the mean [5/6, 1/6]
    np.testing.assert_allclose(expected_entropy(probs), [LOG2 / 3])
    np.testing.assert_allclose(score_bald(probs), [predictive - LOG2 / 3])


def test_mc_scores_are_the_uncertainty_scores_of_the_mean():
    disagreeing = items([[1.0, 0.0], [0.0, 1.0]])
    assert score_mc_least_confidence(disagreeing) == pytest.approx([0.5])
    assert score_mc_margin(disagreeing) == pytest.approx([1.0])
    assert score_mc_ratio(disagreeing) == pytest.approx([1.0])
    assert score_mc_entropy(disagreeing) == pytest.approx([LOG2])
    probs = random_probs(0)
    pairs = [(score_mc_least_confidence, score_least_confidence), (score_mc_margin, score_margin),
             (score_mc_ratio, score_ratio), (score_mc_entropy, score_entropy)]
    for mc_score, score in pairs:
        np.testing.assert_allclose(mc_score(probs), score(probs.mean(axis=0)))


def test_variation_ratios_by_hand():
    probs = items(
        [[1, 0, 0], [0.6, 0.4, 0], [0, 1, 0], [0, 0, 1]],          # votes 0, 0, 1, 2: mode 2 of 4
        [[0, 1, 0]] * 4,                                             # unanimous
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]],               # two modes of 2: same score
        [[0.5, 0.5, 0], [0.5, 0.5, 0], [0.5, 0.5, 0], [0, 1, 0]],   # tied passes vote class 0: 3 of 4
    )
    np.testing.assert_allclose(score_variation_ratios(probs), [0.5, 0.0, 0.5, 0.25])


def test_mean_std_by_hand():
    probs = items([[0.8, 0.2], [0.4, 0.6]], [[0.3, 0.7]] * 2)
    np.testing.assert_allclose(score_mean_std(probs), [0.2, 0.0])      # |0.8 - 0.4| / 2 for both classes
    np.testing.assert_allclose(score_mean_std(items([[1, 0, 0], [0, 1, 0]])), [(0.5 + 0.5 + 0) / 3])


@pytest.mark.parametrize("name", NAMES)
def test_uncertain_item_outscores_confident_one(name):
    probs = items([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
    uncertain, confident = SCORES[name](probs)
    assert uncertain > confident


@pytest.mark.parametrize("name", NAMES)
def test_selection_known_answer(name):
    probs = items([[0.9, 0.1]] * 4,                                  # confident and unanimous
                  [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]],   # passes split evenly
                  [[0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.9, 0.1]])   # in between
    selection = registry()[name](2, rng=np.random.default_rng(0), probs_T_N_C=probs)
    assert selection.positions.tolist() == [1, 2]


@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_whole(name, monkeypatch):
    probs = random_probs(1)
    whole = SCORES[name](probs)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 50)   # 2 items per chunk at T*C = 24
    np.testing.assert_array_equal(SCORES[name](probs), whole)


def test_float32_input_gives_float64_scores():
    probs = random_probs(2)
    for name in NAMES:
        np.testing.assert_allclose(SCORES[name](probs.astype(np.float32)), SCORES[name](probs), atol=1e-6)


# --- the fast path on trusted inputs ------------------------------------------------------------

def hard_probs(seed: int, shape: tuple[int, int, int], dtype) -> np.ndarray:
    """Random MC probabilities with one-hot passes, passes that all agree, and copies of items (ties)."""
    rng = np.random.default_rng(seed)
    probs = random_probs(seed, shape)
    passes, n_pool, classes = shape
    probs[:, rng.integers(0, n_pool, n_pool // 10)] = np.eye(classes)[rng.integers(0, classes, passes)][:, None]
    probs[:, rng.integers(0, n_pool, n_pool // 10)] = probs[:1, rng.integers(0, n_pool, 1)]
    probs[:, rng.integers(0, n_pool, n_pool // 5)] = probs[:, :3].repeat(n_pool // 15 + 1, axis=1)[:, : n_pool // 5]
    return probs.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_fast_path_equals_the_public_call_and_the_exact_scores(name, dtype, monkeypatch):
    monkeypatch.setattr(bayesian, "APPROX_CHUNK_ELEMENTS", 500)      # many blocks and a ragged last one
    for seed in range(3):
        probs = hard_probs(seed, (7, 900, 5), dtype)
        exact = SCORES[name](probs)
        for n in (1, 13, 200):
            internal = registry()[name].select(n, rng=np.random.default_rng(seed), probs_T_N_C=probs)
            public = registry()[name](n, rng=np.random.default_rng(seed), probs_T_N_C=probs)
            reference = select_top(exact, n, rng=np.random.default_rng(seed))
            for selection in (internal, public):
                assert selection.positions.tolist() == reference.positions.tolist()
                np.testing.assert_array_equal(selection.scores, reference.scores)


def test_variation_ratios_blocks_equal_argmax_and_bincount(monkeypatch):
    monkeypatch.setattr(bayesian, "APPROX_CHUNK_ELEMENTS", 300)
    probs = hard_probs(4, (9, 700, 6), np.float32)
    votes = probs.argmax(axis=2)
    counts = np.stack([(votes == label).sum(axis=0) for label in range(6)], axis=1)
    np.testing.assert_array_equal(score_variation_ratios(probs), 1.0 - counts.max(axis=1) / 9)


@pytest.mark.parametrize("name", ["mc_least_confidence", "mc_margin", "mc_ratio", "mean_std"])
def test_float32_approximations_stay_within_a_quarter_of_their_bound(name):
    for passes, classes in ((2, 2), (20, 10), (50, 3), (100, 40)):
        probs = hard_probs(passes, (passes, 2000, classes), np.float64)
        approx, tol = SCORES[name].approximate(probs)
        assert np.abs(approx - SCORES[name](probs)).max() <= tol / 4


# --- properties ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(probs=mc_probabilities(), n=st.integers(1, 15), seed=st.integers(0, 2**32 - 1))
def test_selection_properties(name, probs, n, seed):
    n_pool = probs.shape[1]
    before = probs.copy()
    probs.flags.writeable = False
    strategy = registry()[name]
    selection = strategy(n, rng=np.random.default_rng(seed), probs_T_N_C=probs)
    again = strategy(n, rng=np.random.default_rng(seed), probs_T_N_C=probs)
    positions = selection.positions
    assert positions.dtype == np.int64 and positions.size == min(n, n_pool)
    assert np.unique(positions).size == positions.size
    assert ((positions >= 0) & (positions < n_pool)).all()
    if n >= n_pool:
        assert sorted(positions.tolist()) == list(range(n_pool))
    assert np.isfinite(selection.scores).all()
    assert (np.diff(selection.scores) <= 0).all()
    np.testing.assert_array_equal(selection.scores, SCORES[name](probs)[positions])
    assert np.array_equal(again.positions, positions) and np.array_equal(again.scores, selection.scores)
    np.testing.assert_array_equal(probs, before)


# --- cross-checks against baal (layout [N, C, T]) -----------------------------------------------

def baal_layout(probs_T_N_C: np.ndarray) -> np.ndarray:
    return probs_T_N_C.transpose(1, 2, 0)


@pytest.mark.parametrize("seed", range(3))
def test_bald_agrees_with_baal(seed):
    probs = random_probs(seed)
    ranks, baal_scores = BALD().get_ranks(baal_layout(probs))
    np.testing.assert_allclose(score_bald(probs), baal_scores, atol=1e-12)
    ours = registry()["bald"](probs.shape[1], rng=np.random.default_rng(0), probs_T_N_C=probs)
    assert ours.positions.tolist() == ranks.tolist()


def test_mc_entropy_agrees_with_baal_entropy():
    probs = random_probs(3)
    ranks, baal_scores = Entropy().get_ranks(baal_layout(probs))   # baal averages the passes first
    np.testing.assert_allclose(score_mc_entropy(probs), baal_scores)
    assert np.argsort(-score_mc_entropy(probs)).tolist() == ranks.tolist()


@pytest.mark.parametrize("ours, theirs", [(score_mc_margin, Margin), (score_mc_least_confidence, Certainty)])
def test_baal_margin_and_certainty_run_the_other_way(ours, theirs):
    # baal scores the raw margin p1 - p2 and the raw confidence max p, and ranks them with
    # reverse=False (lowest first). activelab keeps "higher is more informative": 1 - baal's score.
    probs = random_probs(4)
    ranks, baal_scores = theirs().get_ranks(baal_layout(probs))
    np.testing.assert_allclose(ours(probs), 1.0 - baal_scores)
    assert np.argsort(-ours(probs)).tolist() == ranks.tolist()


def test_baal_variance_ranks_like_mean_std_for_two_classes_only():
    # Two classes: both classes have the same std, so mean_std ** 2 is baal's mean variance.
    probs = random_probs(5, shape=(6, 40, 2))
    variance = Variance(reduction="mean").get_uncertainties(baal_layout(probs))
    np.testing.assert_allclose(score_mean_std(probs) ** 2, variance)
    # More classes: a mean of variances favours one large disagreement over several moderate ones,
    # while mean_std (the quantity of Kampffmeyer et al.) does the opposite.
    concentrated = [[0.95, 0.05, 0, 0], [0.05, 0.95, 0, 0]]    # mean std 0.225, mean variance 0.101
    spread = [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]               # mean std 0.25, mean variance 0.0625
    probs = items(concentrated, spread)
    assert score_mean_std(probs)[1] > score_mean_std(probs)[0]
    variance = Variance(reduction="mean").get_uncertainties(baal_layout(probs))
    assert variance[0] > variance[1]


# --- cross-checks against modAL (an estimator that returns the MC-averaged probabilities) ---------

class FixedProbabilities:
    """A stand-in classifier whose ``predict_proba(X)`` returns fixed rows, indexed by ``X``."""

    def __init__(self, probs_N_C: np.ndarray) -> None:
        self.probs_N_C = probs_N_C

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.probs_N_C[X]


@pytest.mark.parametrize("name, measure, sampling", [
    ("mc_least_confidence", classifier_uncertainty, uncertainty_sampling),
    ("mc_entropy", classifier_entropy, entropy_sampling),
])
def test_agrees_with_modal(name, measure, sampling):
    probs = random_probs(6)
    model, pool = FixedProbabilities(probs.mean(axis=0)), np.arange(probs.shape[1])
    np.testing.assert_allclose(SCORES[name](probs), measure(model, pool))
    ours = registry()[name](5, rng=np.random.default_rng(0), probs_T_N_C=probs)
    assert set(ours.positions.tolist()) == set(sampling(model, pool, n_instances=5)[0].tolist())


def test_modal_margin_is_the_raw_margin_and_is_minimised():
    # modAL's classifier_margin is p1 - p2 (lower = more uncertain) and margin_sampling takes the
    # argmin; activelab's score is 1 - (p1 - p2) and is maximised, so the same items are picked.
    probs = random_probs(7)
    model, pool = FixedProbabilities(probs.mean(axis=0)), np.arange(probs.shape[1])
    np.testing.assert_allclose(score_mc_margin(probs), 1.0 - classifier_margin(model, pool))
    ours = registry()["mc_margin"](5, rng=np.random.default_rng(0), probs_T_N_C=probs)
    assert set(ours.positions.tolist()) == set(margin_sampling(model, pool, n_instances=5)[0].tolist())
