"""Mixed strategies (uncertainty pre-sampling, then model-based outliers) and the two auxiliary-head ones.

A mixed strategy chains an uncertainty sampler and a diversity sampler so that the batch is both
confusing to the model and unlike what it has seen: it first keeps the ``presample_factor * n`` items
(4 x the batch by default) with the highest least confidence (resp. entropy), then takes the ``n`` of
them that activate the model least, by the :func:`~activelab.strategies.outliers.score_mb_outliers_mean`
score. This is the order of the study's section 4.5 and of the "uncertainty then diversity" recipe of
its reference [1]: the uncertainty stage keeps what confuses the model, the outlier stage prefers, among
those, what the model has seen least. Positions are returned in the pool, whatever the candidate set.

Active transfer learning and DAL rank items by the probability an auxiliary 2-class head assigns
(``p_wrong_N`` and ``p_unlabelled_N``, computed by the loop with :mod:`activelab.auxiliary`).

References
----------
.. [1] Monarch, R. (2021). Human-in-the-Loop Machine Learning. Manning, ch. 5 (combining uncertainty
       sampling and diversity sampling), ch. 4 (model-based outliers) and active transfer learning for
       uncertainty sampling.
.. [2] Gissin, D. & Shalev-Shwartz, S. (2019). Discriminative Active Learning. arXiv:1907.06347.
.. [3] Lewis, D. & Gale, W. (1994). A sequential algorithm for training text classifiers. SIGIR.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from activelab.strategies.base import INPUTS, Selection, register, select_top
from activelab.strategies.outliers import DEFAULT_STANDARDISE, score_mb_outliers_mean
from activelab.strategies.uncertainty import score_entropy, score_least_confidence
from activelab.validation import check_int

MONARCH = "Monarch 2021, Human-in-the-Loop Machine Learning"
#: The candidate set is this many times the batch size (the study's value).
PRESAMPLE_FACTOR = 4


def presample_then_select(n: int, *, rng: np.random.Generator, presample_N: np.ndarray, final_N: np.ndarray,
                          presample_factor: int) -> Selection:
    """Keep the ``presample_factor * n`` items with the highest ``presample_N``, then the top ``n`` by ``final_N``.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Breaks ties in both rankings.
    presample_N : numpy.ndarray, shape (N,)
        Score of the pre-sampling stage (higher is kept first).
    final_N : numpy.ndarray, shape (N,)
        Score that orders the candidates (higher is picked first); only candidates' values are read.
    presample_factor : int
        The candidate set holds ``presample_factor * n`` items (the whole pool if it is smaller); at
        least 1, so the batch is always filled.

    Returns
    -------
    Selection
        Pool positions (not candidate-set positions) by decreasing ``final_N``, with those scores.
    """
    presample_factor = check_int(presample_factor, "presample_factor", minimum=1)
    candidates = select_top(presample_N, presample_factor * n, rng=rng).positions
    final = select_top(np.asarray(final_N, dtype=np.float64)[candidates], n, rng=rng)
    return Selection(candidates[final.positions], final.scores)


def _register_mixed(name: str, uncertainty: Callable[[np.ndarray], np.ndarray], label: str) -> None:
    def select(n: int, *, rng: np.random.Generator, act_mean_N_L: np.ndarray, probs_N_C: np.ndarray,
               presample_factor: int = PRESAMPLE_FACTOR, standardise: bool = DEFAULT_STANDARDISE) -> Selection:
        return presample_then_select(n, rng=rng, presample_N=uncertainty(probs_N_C),
                                     final_N=score_mb_outliers_mean(act_mean_N_L, standardise=standardise),
                                     presample_factor=presample_factor)

    activations = INPUTS["act_mean_N_L"][0].upper() + INPUTS["act_mean_N_L"][1:]
    select.__name__ = select.__qualname__ = f"select_{name}"
    select.__doc__ = f"""Pre-sample ``presample_factor * n`` items by {label}, then pick the ``n`` quietest of them.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Breaks ties in both stages.
    act_mean_N_L : numpy.ndarray, shape (N, L)
        {activations}.
    probs_N_C : numpy.ndarray, shape (N, C)
        Class probabilities of the deterministic model.
    presample_factor : int, default {PRESAMPLE_FACTOR}
        The candidate set is ``presample_factor * n`` items by {label} (the study's factor 4).
    standardise : bool, default {DEFAULT_STANDARDISE}
        Passed to :func:`~activelab.strategies.outliers.score_mb_outliers_mean` (computed over the pool).

    Returns
    -------
    Selection
        Pool positions by decreasing mb_outliers_mean score (lowest mean activation first), with those
        scores.

    References
    ----------
    .. [1] Monarch (2021), Human-in-the-Loop Machine Learning, ch. 5 (uncertainty, then diversity).
    """
    register(name, needs=("act_mean_N_L", "probs_N_C"), family="hybrid", reference=MONARCH,
             presample_factor=PRESAMPLE_FACTOR, standardise=DEFAULT_STANDARDISE,
             description=f"the lowest mean activation (mb_outliers_mean) among the {PRESAMPLE_FACTOR} x n items "
                         f"with the highest {label}")(select)


_register_mixed("mb_outliers_mean_least_confidence", score_least_confidence, "least confidence")
_register_mixed("mb_outliers_mean_entropy", score_entropy, "predictive entropy")


@register("active_transfer_learning", needs=("p_wrong_N",), family="auxiliary",
          reference=MONARCH + " (active transfer learning)",
          description="highest P(model is wrong) from a correct/incorrect head trained on a holdout split")
def select_active_transfer_learning(n: int, *, rng: np.random.Generator, p_wrong_N: np.ndarray) -> Selection:
    """Pick the ``n`` pool items the correct/incorrect head finds most likely to be mispredicted.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Breaks ties.
    p_wrong_N : numpy.ndarray, shape (N,)
        P(the model's prediction is wrong) for each pool item.

    Returns
    -------
    Selection
        Positions by decreasing ``p_wrong_N``, with those probabilities.

    References
    ----------
    .. [1] Monarch (2021), Human-in-the-Loop Machine Learning: active transfer learning for uncertainty
           sampling.
    """
    return select_top(p_wrong_N, n, rng=rng)


@register("dal", needs=("p_unlabelled_N",), family="auxiliary", reference="Gissin & Shalev-Shwartz 2019",
          description="highest P(unlabelled) from a labelled-vs-pool discriminator head")
def select_dal(n: int, *, rng: np.random.Generator, p_unlabelled_N: np.ndarray) -> Selection:
    """Pick the ``n`` pool items least like the labelled set (Discriminative Active Learning).

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Breaks ties.
    p_unlabelled_N : numpy.ndarray, shape (N,)
        P(the item is unlabelled) from the labelled-vs-pool discriminator.

    Returns
    -------
    Selection
        Positions by decreasing ``p_unlabelled_N``, with those probabilities.

    Notes
    -----
    The paper acquires the batch in several sub-batches, retraining the discriminator in between; here
    the loop trains it once per round, so this is the single-step variant.

    References
    ----------
    .. [1] Gissin & Shalev-Shwartz (2019), Discriminative Active Learning.
    """
    return select_top(p_unlabelled_N, n, rng=rng)
