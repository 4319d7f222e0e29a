"""Mixed strategies (outlier pre-sampling, then uncertainty) and the two strategies with an auxiliary head.

The mixed strategies pre-sample ``candidates`` items with the model-based-outlier score and pick the
final batch from them by an uncertainty score; the positions returned are positions in the pool, not
in the candidate set (the study returned candidate-set positions, so the wrong images were labelled).
The study's write-up describes the opposite order (4 x the batch by uncertainty, then the outliers
among them); the order here, outliers first, is the one the strategy names spell out.
Active transfer learning and DAL rank items by the probability an auxiliary 2-class head assigns
(``p_wrong_N`` and ``p_unlabelled_N``, computed by the loop with :mod:`activelab.auxiliary`).

References
----------
.. [1] Monarch, R. (2021). Human-in-the-Loop Machine Learning. Manning: model-based outliers (diversity
       sampling) and active transfer learning for uncertainty sampling.
.. [2] Gissin, D. & Shalev-Shwartz, S. (2019). Discriminative Active Learning. arXiv:1907.06347.
.. [3] Lewis, D. & Gale, W. (1994). A sequential algorithm for training text classifiers. SIGIR.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from activelab.strategies.base import Selection, register, select_top
from activelab.strategies.outliers import score_mb_outliers_mean
from activelab.strategies.uncertainty import score_entropy, score_least_confidence
from activelab.validation import check_int

MONARCH = "Monarch 2021, Human-in-the-Loop Machine Learning"


def presample_then_select(n: int, *, rng: np.random.Generator, presample_N: np.ndarray, probs_N_C: np.ndarray,
                          score: Callable[[np.ndarray], np.ndarray], candidates: int) -> Selection:
    """Keep the ``max(candidates, n)`` items with the highest ``presample_N``, then the top ``n`` by ``score``.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Breaks ties in both rankings.
    presample_N : numpy.ndarray, shape (N,)
        Score of the pre-sampling stage (higher is kept first).
    probs_N_C : numpy.ndarray, shape (N, C)
        Class probabilities, scored only on the candidates.
    score : callable
        Maps candidate probabilities ``(K, C)`` to a length-K score, higher more informative.
    candidates : int
        Size of the candidate set (raised to ``n`` if smaller, so the batch is always filled).

    Returns
    -------
    Selection
        Pool positions (not candidate-set positions) by decreasing ``score``, with those scores.
    """
    candidates = check_int(candidates, "candidates", minimum=1)
    pool = select_top(presample_N, max(candidates, n), rng=rng).positions
    final = select_top(score(probs_N_C[pool]), n, rng=rng)
    return Selection(pool[final.positions], final.scores)


def _register_mixed(name: str, score: Callable[[np.ndarray], np.ndarray], label: str) -> None:
    def select(n: int, *, rng: np.random.Generator, act_N_L: np.ndarray, probs_N_C: np.ndarray,
               candidates: int = 4000) -> Selection:
        return presample_then_select(n, rng=rng, presample_N=score_mb_outliers_mean(act_N_L), probs_N_C=probs_N_C,
                                     score=score, candidates=candidates)

    select.__name__ = f"select_{name}"
    select.__doc__ = (f"Pre-sample ``candidates`` (default 4000) items by the mb_outliers_mean score, then pick "
                      f"the ``n`` with the highest {label} among them; returns pool positions.")
    register(name, needs=("act_N_L", "probs_N_C"), family="hybrid", reference=MONARCH, candidates=4000,
             description=f"{label} among the candidates pre-sampled as model-based outliers (mean)")(select)


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
