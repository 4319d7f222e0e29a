"""MC-dropout scores over ``probs_T_N_C``: BALD, the MC-averaged uncertainty scores and two spread scores.

Each ``score_*`` maps the class probabilities of ``T`` stochastic passes over ``N`` pool items to a
length-N score where higher means more informative; each registered strategy is that score followed by
:func:`~activelab.strategies.base.select_top` (:func:`~activelab.strategies.base.register_score`). Scores are
computed in chunks of pool items (:func:`~activelab.strategies.base.chunk_slices`) so that temporaries stay
bounded for pools of a million images.

Selection takes a fast path (:func:`~activelab.strategies.base.select_top_refined`): BALD, the MC-averaged
scores and ``mean_std`` are first computed in float32 blocks read in the input's dtype, each with a proven
bound on its distance to the float64 score; only the items that can still reach the top n get their
float64 score, so selections and scores are those of the float64 scores. Variation ratios only compare
values and count votes, which is exact in any dtype.

References
----------
.. [1] Houlsby, N., Huszar, F., Ghahramani, Z. & Lengyel, M. (2011). Bayesian active learning for
       classification and preference learning. arXiv:1112.5745.
.. [2] Gal, Y., Islam, R. & Ghahramani, Z. (2017). Deep Bayesian active learning with image data. ICML.
.. [3] Freeman, L. C. (1965). Elementary Applied Statistics. Wiley (variation ratio).
.. [4] Kampffmeyer, M., Salberg, A.-B. & Jenssen, R. (2016). Semantic segmentation of small objects and
       modeling of uncertainty in urban remote sensing images using deep convolutional neural networks.
       CVPR workshops.
.. [5] Kendall, A., Badrinarayanan, V. & Cipolla, R. (2015). Bayesian SegNet: model uncertainty in deep
       convolutional encoder-decoder architectures for scene understanding. arXiv:1511.02680.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import entr

from activelab.strategies.base import chunk_slices, register_score
from activelab.strategies.uncertainty import (entropy_float32, entropy_tolerance, score_entropy,
                                              score_least_confidence, score_margin, score_ratio, top_two)

GAL = "Gal, Islam & Ghahramani 2017"


def _per_chunk(score_chunk: Callable[[np.ndarray], np.ndarray], probs_T_N_C: np.ndarray, *,
               dtype: type | None = np.float64, out_dtype: type = np.float64) -> np.ndarray:
    """Apply ``score_chunk`` to bounded chunks of the pool (as ``dtype``; ``None`` keeps the input's) and join."""
    probs_T_N_C = np.asarray(probs_T_N_C)
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    scores_N = np.empty(n_pool, dtype=out_dtype)
    for rows in chunk_slices(n_pool, n_passes * n_classes):
        chunk = probs_T_N_C[:, rows]
        scores_N[rows] = score_chunk(chunk if dtype is None else np.asarray(chunk, dtype=dtype))
    return scores_N


#: Elements per chunk of the float32 approximate passes (small enough to stay in cache).
APPROX_CHUNK_ELEMENTS = 2**18
_EPS32 = float(np.finfo(np.float32).eps)


def _per_block_float32(score_chunk: Callable[[np.ndarray], np.ndarray], probs_T_N_C: np.ndarray) -> np.ndarray:
    """Apply ``score_chunk`` to float32 chunks of at most ``APPROX_CHUNK_ELEMENTS`` and join the float32 scores."""
    probs_T_N_C = np.asarray(probs_T_N_C)
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    step = max(1, APPROX_CHUNK_ELEMENTS // max(1, n_passes * n_classes))
    scores_N = np.empty(n_pool, dtype=np.float32)
    for start in range(0, n_pool, step):
        scores_N[start:start + step] = score_chunk(np.asarray(probs_T_N_C[:, start:start + step], dtype=np.float32))
    return scores_N


def _mean_tolerance(n_passes: int, n_classes: int) -> float:
    """Bound (safety factor about 4) on what the float32 mean over T passes moves an entropy of the mean."""
    return 4.0 * _EPS32 * n_passes * (n_classes + 1)


def _mc_entropy_float32(probs_T_n_C: np.ndarray) -> np.ndarray:
    return entropy_float32(probs_T_n_C.mean(axis=0))


def _bald_float32(probs_T_n_C: np.ndarray) -> np.ndarray:
    n_passes, n_items, n_classes = probs_T_n_C.shape
    predictive = entropy_float32(probs_T_n_C.mean(axis=0))
    expected = entropy_float32(probs_T_n_C.reshape(n_passes * n_items, n_classes)).reshape(n_passes, n_items)
    return np.maximum(predictive - expected.mean(axis=0), 0.0)


def _approximate_bald(probs_T_N_C: np.ndarray) -> tuple[np.ndarray, float]:
    n_passes, _, n_classes = np.shape(probs_T_N_C)
    tol = 2 * entropy_tolerance(n_classes) + _mean_tolerance(n_passes, n_classes)
    return _per_block_float32(_bald_float32, probs_T_N_C), tol


def _approximate_mc_entropy(probs_T_N_C: np.ndarray) -> tuple[np.ndarray, float]:
    n_passes, _, n_classes = np.shape(probs_T_N_C)
    tol = entropy_tolerance(n_classes) + _mean_tolerance(n_passes, n_classes)
    return _per_block_float32(_mc_entropy_float32, probs_T_N_C), tol


def _mean_error(n_passes: int) -> float:
    """Bound (safety factor about 4) on ``|float32 mean_t p_t - exact mean|`` for probabilities in [0, 1].

    Rounding the input to float32 (half an ulp), T - 1 float32 additions of terms of at most 1 and the
    division by T.
    """
    return 4.0 * _EPS32 * (n_passes + 1)


def _approximate_top_two_score(probs_T_N_C: np.ndarray, kind: str) -> tuple[np.ndarray, float]:
    """Float32 least confidence, margin or ratio of the mean prediction, with a bound on their error.

    The top two of the float32 mean are each within ``e = _mean_error(T)`` of the exact ones, so
    ``1 - p_(1)`` is within ``e``, ``1 - (p_(1) - p_(2))`` within ``2 e``, and ``p_(2) / p_(1)`` within
    ``2 e / (min p_(1) - e)`` over the pool (no bound, so no shortcut, if that minimum is below ``e``).
    """
    probs_T_N_C = np.asarray(probs_T_N_C)
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    error = _mean_error(n_passes)
    step = max(1, APPROX_CHUNK_ELEMENTS // max(1, n_passes * n_classes))
    approx_N = np.empty(n_pool)
    lowest_first = np.inf
    for start in range(0, n_pool, step):
        block = np.asarray(probs_T_N_C[:, start:start + step], dtype=np.float32)
        first, second = top_two(block.mean(axis=0))
        if kind == "least_confidence":
            approx_N[start:start + step] = 1.0 - first
        elif kind == "margin":
            approx_N[start:start + step] = 1.0 - (first - second)
        else:
            approx_N[start:start + step] = np.divide(second, first, out=np.zeros_like(first), where=first > 0)
            lowest_first = min(lowest_first, float(first.min(initial=np.inf)))
    if kind == "least_confidence":
        return approx_N, error
    if kind == "margin":
        return approx_N, 2.0 * error
    return approx_N, (2.0 * error / (lowest_first - error) if lowest_first > error else np.inf)


def _approximate_mean_std(probs_T_N_C: np.ndarray) -> tuple[np.ndarray, float]:
    """Float32 ``mean_c std_t p_t,c`` and a bound (safety factor about 4) on its error.

    The two-pass float32 variance of values in [0, 1] is ``(var + e^2)(1 + r)`` with ``e`` the error of
    the mean (at most ``(T + 1) eps``) and ``|r| <= (T + 2) eps``; its square root is within
    ``e + (T + 3) eps / 4`` of the exact standard deviation (at most 1/2), and the mean over C adds ``C eps``.
    """
    n_passes, _, n_classes = np.shape(probs_T_N_C)
    tol = 4.0 * _EPS32 * ((n_passes + 1) + (n_passes + 3) / 4 + n_classes + 1)
    return _per_block_float32(lambda probs: probs.std(axis=0).mean(axis=1), probs_T_N_C), tol


def expected_entropy(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Mean over passes of the entropy of each pass, ``mean_t H[p_t]``, in nats.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        The expected (aleatoric) entropy of each item; ``0 log 0 = 0``.
    """
    return _per_chunk(lambda probs: entr(probs).sum(axis=2).mean(axis=0), probs_T_N_C)


def _bald_chunk(probs_T_n_C: np.ndarray) -> np.ndarray:
    predictive = entr(probs_T_n_C.mean(axis=0)).sum(axis=1)
    expected = entr(probs_T_n_C).sum(axis=2).mean(axis=0)
    return np.maximum(predictive - expected, 0.0)


def score_bald(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Mutual information between an item's label and the model parameters (BALD), in nats.

    ``H[mean_t p_t] - mean_t H[p_t]``: the predictive entropy of the mean prediction minus the entropy of
    each pass, averaged over the T passes (each entropy sums over the C classes). Mutual information is
    never negative, so round-off below zero is clipped to 0.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        BALD score of each item, in ``[0, log C]``.

    References
    ----------
    .. [1] Houlsby et al. (2011), Bayesian active learning for classification and preference learning.
    .. [2] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    return _per_chunk(_bald_chunk, probs_T_N_C)


def _on_mean(score_N_C: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda probs_T_n_C: score_N_C(probs_T_n_C.mean(axis=0))


def score_mc_least_confidence(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Least confidence ``1 - max_c p_c`` of the MC-averaged prediction ``p = mean_t p_t``.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        :func:`~activelab.strategies.uncertainty.score_least_confidence` of the mean prediction.

    References
    ----------
    .. [1] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    return _per_chunk(_on_mean(score_least_confidence), probs_T_N_C)


def score_mc_margin(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Margin score ``1 - (p_(1) - p_(2))`` of the MC-averaged prediction ``p = mean_t p_t``.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        :func:`~activelab.strategies.uncertainty.score_margin` of the mean prediction.

    References
    ----------
    .. [1] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    return _per_chunk(_on_mean(score_margin), probs_T_N_C)


def score_mc_ratio(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Ratio ``p_(2) / p_(1)`` of the MC-averaged prediction ``p = mean_t p_t``.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        :func:`~activelab.strategies.uncertainty.score_ratio` of the mean prediction.

    References
    ----------
    .. [1] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    return _per_chunk(_on_mean(score_ratio), probs_T_N_C)


def score_mc_entropy(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Predictive entropy ``H[mean_t p_t]`` of the MC-averaged prediction, in nats.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        :func:`~activelab.strategies.uncertainty.score_entropy` of the mean prediction.

    References
    ----------
    .. [1] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    return _per_chunk(_on_mean(score_entropy), probs_T_N_C)


def _variation_ratios_block(probs_T_n_C: np.ndarray) -> np.ndarray:
    """``1 - f_mode / T`` of one block, in the input's dtype: votes by a running comparison over classes.

    ``argmax`` over a short last axis costs a function call per row; here the classes are the leading
    axis, the maximum over them is C - 1 element-wise operations, and the vote is the lowest class equal
    to the maximum (``argmax``'s tie rule), found by overwriting from the last class down.
    """
    n_passes, n_items, n_classes = probs_T_n_C.shape
    classes_C_T_n = np.ascontiguousarray(np.moveaxis(probs_T_n_C, 2, 0))
    largest_T_n = classes_C_T_n.max(axis=0)
    votes_T_n = np.full(largest_T_n.shape, n_classes - 1, dtype=np.min_scalar_type(n_classes))
    hits_T_n = np.empty(largest_T_n.shape, dtype=bool)
    for label in range(n_classes - 2, -1, -1):
        np.equal(classes_C_T_n[label], largest_T_n, out=hits_T_n)
        np.copyto(votes_T_n, label, where=hits_T_n)
    count_dtype = np.min_scalar_type(n_passes)
    mode_n = np.zeros(n_items, dtype=count_dtype)
    for label in range(n_classes):
        np.equal(votes_T_n, label, out=hits_T_n)
        np.maximum(mode_n, np.add.reduce(hits_T_n, axis=0, dtype=count_dtype), out=mode_n)
    return 1.0 - mode_n / n_passes


def score_variation_ratios(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Share of passes that do not vote for the modal class: ``1 - f_mode / T``.

    Each pass votes for its most probable class. Tie rule: a pass whose largest probability is shared
    by several classes votes for the lowest class index (``argmax``); when several classes share the
    largest vote count, ``f_mode`` is that count, so which of them is "the" mode does not matter.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        Variation ratio of each item, in ``[0, 1 - 1/T]``; 0 when every pass agrees.

    References
    ----------
    .. [1] Freeman (1965), Elementary Applied Statistics.
    .. [2] Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data.
    """
    probs_T_N_C = np.asarray(probs_T_N_C)
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    step = max(1, APPROX_CHUNK_ELEMENTS // max(1, n_passes * n_classes))
    scores_N = np.empty(n_pool)
    for start in range(0, n_pool, step):    # comparisons only: no float64 copy, exact in any dtype
        scores_N[start:start + step] = _variation_ratios_block(probs_T_N_C[:, start:start + step])
    return scores_N


def score_mean_std(probs_T_N_C: np.ndarray) -> np.ndarray:
    """Mean over classes of the standard deviation over passes of each class probability.

    The standard deviation is the population one (``ddof=0``), as in the references.

    Parameters
    ----------
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.

    Returns
    -------
    numpy.ndarray, shape (N,)
        ``mean_c std_t p_t,c`` of each item; 0 when every pass agrees.

    References
    ----------
    .. [1] Kampffmeyer, Salberg & Jenssen (2016), Semantic segmentation of small objects and modeling of
           uncertainty in urban remote sensing images.
    .. [2] Kendall, Badrinarayanan & Cipolla (2015), Bayesian SegNet.
    """
    return _per_chunk(lambda probs: probs.std(axis=0).mean(axis=1), probs_T_N_C)


def _register_bayesian(name: str, score: Callable[[np.ndarray], np.ndarray], description: str,
                       reference: str) -> None:
    register_score(name, score, needs=("probs_T_N_C",), family="bayesian", description=description,
                   reference=reference)


score_bald.approximate = _approximate_bald
score_mc_entropy.approximate = _approximate_mc_entropy
score_mc_least_confidence.approximate = lambda probs_T_N_C: _approximate_top_two_score(probs_T_N_C, "least_confidence")
score_mc_margin.approximate = lambda probs_T_N_C: _approximate_top_two_score(probs_T_N_C, "margin")
score_mc_ratio.approximate = lambda probs_T_N_C: _approximate_top_two_score(probs_T_N_C, "ratio")
score_mean_std.approximate = _approximate_mean_std

_register_bayesian("bald", score_bald, "highest mutual information between label and weights (MC dropout)",
                   "Houlsby et al. 2011; " + GAL)
_register_bayesian("mc_least_confidence", score_mc_least_confidence,
                   "lowest top-class probability of the MC-averaged prediction", GAL)
_register_bayesian("mc_margin", score_mc_margin, "smallest top-two gap of the MC-averaged prediction", GAL)
_register_bayesian("mc_ratio", score_mc_ratio, "highest second-to-first ratio of the MC-averaged prediction", GAL)
_register_bayesian("mc_entropy", score_mc_entropy, "highest entropy of the MC-averaged prediction", GAL)
_register_bayesian("variation_ratios", score_variation_ratios,
                   "largest share of MC passes disagreeing with the modal class", "Freeman 1965; " + GAL)
_register_bayesian("mean_std", score_mean_std, "highest class-averaged std of the MC probabilities",
                   "Kampffmeyer et al. 2016; Kendall et al. 2015")
