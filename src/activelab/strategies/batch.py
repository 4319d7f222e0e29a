"""Batch-aware acquisition: greedy BatchBALD and power (stochastic) sampling of any score.

Top-k of a per-item score fills a batch with near-duplicates. BatchBALD picks greedily the item that
adds the most joint mutual information to the items already chosen; power sampling draws the batch at
random with probability proportional to ``score ** beta``, which Kirsch et al. (2023) found competitive
at almost no extra cost.

BatchBALD keeps the chosen items' joint label configurations as a ``[T, M]`` matrix, following the
paper's implementation (batchbald_redux), with two changes that keep it stable for large batches:
each column stores ``P_t(y_A = m) / p(y_A = m)`` (the pass weights given the configuration, mean 1 over
T) instead of the raw product of probabilities, which underflows after a few hundred items; and a
sampled configuration is extended by drawing the new label from its exact conditional, so samples are
never redrawn from scratch. The joint entropy then splits as ``H(y_A) + H(y | y_A)``; ``H(y_A)`` is
the same for every candidate, so each greedy step ranks candidates by the conditional mutual
information ``I(y; w | y_A) = H(y | y_A) - E_w H(y | w)``, the gain in the batch's joint mutual
information. The recorded score of each pick is that gain (the first is the item's BALD score).

Scoring every candidate against all M configurations costs ``M * N * C`` logarithms per pick. Most
candidates are ruled out by a cheap upper bound instead: ``H(y | y_A) = sum_m p_m H(q_m)`` is concave in
the conditionals ``q_m``, so merging configurations into groups (here: by the pass that carries most of
their weight) can only raise it (Jensen). The bound costs ``G * N * C`` logarithms with ``G <= T`` groups;
only candidates whose bound reaches the best exact gain found (less a float round-off margin) are scored
exactly, so the picks, their order and their gains are those of scoring every candidate exactly.

References
----------
.. [1] Kirsch, A., van Amersfoort, J. & Gal, Y. (2019). BatchBALD: efficient and diverse batch
       acquisition for deep Bayesian active learning. NeurIPS.
.. [2] Kirsch, A., Farquhar, S., Atighehchian, P., Jesson, A., Branchaud-Charron, F. & Gal, Y. (2023).
       Stochastic batch acquisition: a simple baseline for deep active learning. TMLR.
.. [3] Kool, W., van Hoof, H. & Welling, M. (2019). Stochastic beams and where to find them: the
       Gumbel-top-k trick for sampling sequences without replacement. ICML.
"""

from __future__ import annotations

import numpy as np

from activelab.strategies.base import Selection, chunk_slices, register, select_top
from activelab.strategies.bayesian import expected_entropy, score_bald
from activelab.strategies.uncertainty import score_entropy, score_margin
from activelab.validation import check_float, check_int

KIRSCH_2019 = "Kirsch, van Amersfoort & Gal 2019"
KIRSCH_2023 = "Kirsch et al. 2023, Stochastic Batch Acquisition"

#: Scores at or below this value (zero, or negative round-off) enter power sampling as this value, so
#: ``log`` stays finite: such items get weight ``~1e-308 ** beta`` (drawn last) instead of NaN.
SCORE_FLOOR = float(np.finfo(np.float64).tiny)


def _conditional_entropy(weights_T_M: np.ndarray, config_p_M: np.ndarray, probs_T_N_C: np.ndarray,
                         positions: np.ndarray | None = None) -> np.ndarray:
    """``H(y_i | y_A)`` of the pool items at ``positions`` (all if None) given the chosen items' configurations.

    Chunked over items; a chunk of ``positions`` is gathered at a time, so no copy of the pool is made.
    """
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    n_items = n_pool if positions is None else positions.size
    n_configs = config_p_M.size
    weights_M_T = weights_T_M.T / n_passes
    tiny = np.finfo(np.float64).tiny
    entropy_N = np.empty(n_items)
    for rows in chunk_slices(n_items, (2 * n_configs + n_passes) * n_classes):
        chunk = probs_T_N_C[:, rows] if positions is None else np.take(probs_T_N_C, positions[rows], axis=1)
        probs_T_nC = np.asarray(chunk, dtype=np.float64).reshape(n_passes, -1)
        conditional_M_nC = weights_M_T @ probs_T_nC
        # p log p with 0 log 0 = 0, in place: about twice as fast as scipy's ``entr`` on this hot path.
        plogp_M_nC = np.maximum(conditional_M_nC, tiny)
        np.log(plogp_M_nC, out=plogp_M_nC)
        plogp_M_nC *= conditional_M_nC
        entropy_N[rows] = -(config_p_M @ plogp_M_nC).reshape(-1, n_classes).sum(axis=1)
    return entropy_N


def _grouped(weights_T_M: np.ndarray, config_p_M: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the configurations whose ``depth`` largest pass weights sit at the same passes, in the same order.

    Returns the groups' weights ``[T, G]`` (the probability-weighted mean of their members', so a group's
    conditional is the mixture of its members') and their probabilities ``[G]``.
    """
    n_passes = weights_T_M.shape[0]
    if depth == 1:
        key_M = weights_T_M.argmax(axis=0)
    else:
        top_d_M = np.argsort(-weights_T_M, axis=0, kind="stable")[:depth]
        key_M = np.ravel_multi_index(tuple(top_d_M), (n_passes,) * depth)
    _, group_M = np.unique(key_M, return_inverse=True)
    group_p_G = np.bincount(group_M, weights=config_p_M)
    members_M_G = group_M[:, None] == np.arange(group_p_G.size)
    return (weights_T_M * config_p_M) @ members_M_G / group_p_G, group_p_G


def _round_off(n_configs: int, n_passes: int, n_classes: int) -> float:
    """Bound (safety factor about 4) on the float64 error of one computed ``H(y_i | y_A)``.

    The pass weights' products sum T terms, the entropy sums ``M * C`` terms ``p_m q log q`` of at most
    ``1/e`` each with ``sum p_m = 1``: errors of a few ulp per term and ``(M + C)`` ulp of the sums.
    """
    return 4.0 * float(np.finfo(np.float64).eps) * (n_configs + n_passes + n_classes) * n_classes


#: Candidates scored exactly first in a pruned step (those with the highest upper bounds).
FIRST_CANDIDATES = 64


def _gains(weights_T_M: np.ndarray, config_p_M: np.ndarray, probs_T_N_C: np.ndarray, expected_N: np.ndarray,
           available_N: np.ndarray) -> np.ndarray:
    """``I(y_i; w | y_A)`` of every available item that can be the best pick; ``-inf`` for the others.

    Every available item whose exact gain is the largest gets exactly the value the unpruned computation
    gives it. The others are ruled out by upper bounds: configurations merged by their peak pass
    (:func:`_grouped`, depth 1) for the whole pool, then, for the items that bound does not rule out, by
    their two largest passes (depth 2). An item is ruled out when its bound falls short of the best exact
    gain among the :data:`FIRST_CANDIDATES` items of highest first bound by more than the round-off margin.
    """
    n_passes, n_pool, n_classes = probs_T_N_C.shape
    n_configs = config_p_M.size
    gain_N = np.full(n_pool, -np.inf)
    available = np.flatnonzero(available_N)
    weights_T_G, group_p_G = _grouped(weights_T_M, config_p_M, depth=1)
    if 4 * group_p_G.size > n_configs:      # too few configurations for merging to save work
        gain_N[available] = (_conditional_entropy(weights_T_M, config_p_M, probs_T_N_C, available)
                             - expected_N[available])
        return gain_N
    bound_N = _conditional_entropy(weights_T_G, group_p_G, probs_T_N_C) - expected_N
    bound_N[~available_N] = -np.inf
    first = np.sort(np.argpartition(-bound_N, min(FIRST_CANDIDATES, available.size) - 1)[:FIRST_CANDIDATES])
    first = first[available_N[first]]
    gain_N[first] = _conditional_entropy(weights_T_M, config_p_M, probs_T_N_C, first) - expected_N[first]
    floor = gain_N[first].max() - 2.0 * _round_off(n_configs, n_passes, n_classes)
    rest = np.flatnonzero((bound_N >= floor) & np.isneginf(gain_N))
    if rest.size > FIRST_CANDIDATES:
        weights_T_G, group_p_G = _grouped(weights_T_M, config_p_M, depth=2)
        if 4 * group_p_G.size <= n_configs:
            rest = rest[_conditional_entropy(weights_T_G, group_p_G, probs_T_N_C, rest) - expected_N[rest] >= floor]
    gain_N[rest] = _conditional_entropy(weights_T_M, config_p_M, probs_T_N_C, rest) - expected_N[rest]
    return gain_N


def _add_item(weights_T_M: np.ndarray, config_p_M: np.ndarray, exact: bool, probs_T_C: np.ndarray,
              num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Extend the configurations with one chosen item's label.

    While ``M * C <= num_samples`` the configurations are enumerated exactly (those of probability 0
    dropped) and ``config_p_M`` holds their probabilities. Beyond that, ``num_samples`` configurations
    are drawn once from the exact joint, then each is extended by a label drawn from its conditional,
    and ``config_p_M`` holds the uniform Monte-Carlo weights ``1 / num_samples``.
    """
    n_passes, n_classes = probs_T_C.shape
    conditional_M_C = weights_T_M.T @ probs_T_C / n_passes
    if exact and config_p_M.size * n_classes <= num_samples:
        joint_MC = (config_p_M[:, None] * conditional_M_C).ravel()
        keep = joint_MC > 0
        extended_T_MC = (weights_T_M[:, :, None] * probs_T_C[:, None, :]).reshape(n_passes, -1)
        return extended_T_MC[:, keep] / conditional_M_C.ravel()[keep], joint_MC[keep], True
    if exact:
        drawn = rng.choice(config_p_M.size, size=num_samples, p=config_p_M / config_p_M.sum())
        weights_T_M, conditional_M_C = weights_T_M[:, drawn], conditional_M_C[drawn]
    cdf_M_C = np.cumsum(conditional_M_C, axis=1)
    targets_M = (1.0 - rng.random(cdf_M_C.shape[0])) * cdf_M_C[:, -1]
    labels_M = (cdf_M_C < targets_M[:, None]).sum(axis=1)
    chosen_p_M = conditional_M_C[np.arange(labels_M.size), labels_M]
    weights_T_M = weights_T_M * probs_T_C[:, labels_M] / chosen_p_M
    return weights_T_M, np.full(labels_M.size, 1.0 / labels_M.size), False


@register("batchbald", needs=("probs_T_N_C",), family="batch", num_samples=1000,
          description="greedy batch maximising the joint mutual information with the weights",
          reference=KIRSCH_2019)
def select_batchbald(n: int, *, rng: np.random.Generator, probs_T_N_C: np.ndarray,
                     num_samples: int = 1000) -> Selection:
    """Choose a batch greedily by joint mutual information between its labels and the weights.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the sampled label configurations and breaks exact ties between candidates.
    probs_T_N_C : numpy.ndarray, shape (T, N, C)
        Class probabilities of T stochastic passes over N pool items.
    num_samples : int, default 1000
        Largest number of joint label configurations kept: exact enumeration while ``C ** k`` fits,
        Monte-Carlo samples afterwards. Memory per candidate chunk is bounded by
        :data:`~activelab.strategies.base.CHUNK_ELEMENTS`; time per pick is ``O(N * T * T * C)`` for the
        bounds plus ``O(K * num_samples * T * C)`` for the K candidates they do not rule out.

    Returns
    -------
    Selection
        Positions in greedy order; each score is the gain in joint mutual information (nats) the pick
        brought, so the first is its BALD score and ``n=1`` is BALD's top item. Exact ties between
        candidates are broken at random with ``rng``.

    References
    ----------
    .. [1] Kirsch, van Amersfoort & Gal (2019), BatchBALD: efficient and diverse batch acquisition for
           deep Bayesian active learning.
    """
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    n_passes, n_pool, _ = probs_T_N_C.shape
    expected_N = expected_entropy(probs_T_N_C)
    gain_N = score_bald(probs_T_N_C)
    weights_T_M, config_p_M, exact = np.ones((n_passes, 1)), np.ones(1), True
    available_N = np.ones(n_pool, dtype=bool)
    positions, gains = [], []
    for step in range(min(n, n_pool)):
        if step:
            weights_T_M, config_p_M, exact = _add_item(weights_T_M, config_p_M, exact,
                                                       probs_T_N_C[:, positions[-1]], num_samples, rng)
            gain_N = _gains(weights_T_M, config_p_M, probs_T_N_C, expected_N, available_N)
        gain_N[~available_N] = -np.inf
        best = np.flatnonzero(gain_N == gain_N.max())
        pick = int(best[0] if best.size == 1 else rng.choice(best))
        positions.append(pick)
        gains.append(gain_N[pick])
        available_N[pick] = False
    return Selection(np.array(positions, dtype=np.int64), np.array(gains))


def power_sample(scores_N: np.ndarray, n: int, *, rng: np.random.Generator, beta: float) -> Selection:
    """Sample ``n`` items without replacement with probability proportional to ``score ** beta``.

    Uses the Gumbel-top-k trick: the ``n`` largest ``beta * log(score) + Gumbel noise`` are a sample
    without replacement, in draw order. Scores below :data:`SCORE_FLOOR` (zero) are raised to it.

    Parameters
    ----------
    scores_N : numpy.ndarray, shape (N,)
        Non-negative informativeness scores (higher is more informative).
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Source of the Gumbel noise.
    beta : float
        Non-negative power: 0 samples uniformly, large values approach top-k.

    Returns
    -------
    Selection
        Positions in draw order, each with its original score (not the perturbed key).

    References
    ----------
    .. [1] Kirsch et al. (2023), Stochastic batch acquisition: a simple baseline for deep active learning.
    .. [2] Kool, van Hoof & Welling (2019), Stochastic beams and where to find them.
    """
    beta = check_float(beta, "beta", minimum=0.0)
    scores_N = np.asarray(scores_N, dtype=np.float64)
    keys_N = beta * np.log(np.maximum(scores_N, SCORE_FLOOR)) + rng.gumbel(size=scores_N.shape[0])
    positions = select_top(keys_N, n, rng=rng).positions
    return Selection(positions, scores_N[positions])


@register("power_bald", needs=("probs_T_N_C",), family="batch", beta=1.0, reference=KIRSCH_2023,
          description="batch sampled with probability proportional to BALD ** beta")
def select_power_bald(n: int, *, rng: np.random.Generator, probs_T_N_C: np.ndarray,
                      beta: float = 1.0) -> Selection:
    """Power-sample ``n`` items by BALD score (:func:`power_sample` of :func:`score_bald`)."""
    return power_sample(score_bald(probs_T_N_C), n, rng=rng, beta=beta)


@register("power_entropy", needs=("probs_N_C",), family="batch", beta=1.0, reference=KIRSCH_2023,
          description="batch sampled with probability proportional to predictive entropy ** beta")
def select_power_entropy(n: int, *, rng: np.random.Generator, probs_N_C: np.ndarray,
                         beta: float = 1.0) -> Selection:
    """Power-sample ``n`` items by entropy (:func:`power_sample` of ``score_entropy``)."""
    return power_sample(score_entropy(probs_N_C), n, rng=rng, beta=beta)


@register("power_margin", needs=("probs_N_C",), family="batch", beta=1.0, reference=KIRSCH_2023,
          description="batch sampled with probability proportional to margin score ** beta")
def select_power_margin(n: int, *, rng: np.random.Generator, probs_N_C: np.ndarray,
                        beta: float = 1.0) -> Selection:
    """Power-sample ``n`` items by margin score ``1 - (p_(1) - p_(2))`` (:func:`power_sample`)."""
    return power_sample(score_margin(probs_N_C), n, rng=rng, beta=beta)
