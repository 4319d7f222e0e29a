"""Random sampling and the classic uncertainty scores over one deterministic prediction.

Each ``score_*`` maps class probabilities ``probs_N_C`` to a length-N score where higher means more
informative; each registered strategy is that score followed by :func:`select_top`
(:func:`~activelab.strategies.base.register_score`).

References
----------
.. [1] Settles, B. (2009). Active Learning Literature Survey. University of Wisconsin-Madison, TR 1648.
.. [2] Lewis, D. & Gale, W. (1994). A sequential algorithm for training text classifiers. SIGIR.
.. [3] Scheffer, T., Decomain, C. & Wrobel, S. (2001). Active hidden Markov models for information
       extraction (margin sampling). IDA.
.. [4] Shannon, C. (1948). A mathematical theory of communication (entropy); used for active learning
       by Settles & Craven (2008).
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

from activelab.strategies.base import Selection, register, register_score

SETTLES = "Settles 2009, Active Learning Literature Survey"


def top_two(probs_N_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the largest and second-largest probability of each row (0 as second with one class)."""
    probs_N_C = np.asarray(probs_N_C, dtype=np.float64)
    if probs_N_C.shape[1] == 1:
        return probs_N_C[:, 0], np.zeros(probs_N_C.shape[0])
    top = np.partition(probs_N_C, probs_N_C.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1], top[:, 0]


def score_least_confidence(probs_N_C: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``: high when the model's best guess is weak, so the least confident items come first."""
    first, _ = top_two(probs_N_C)
    return 1.0 - first


def score_margin(probs_N_C: np.ndarray) -> np.ndarray:
    """``1 - (p_(1) - p_(2))``: high when the two most likely classes are close."""
    first, second = top_two(probs_N_C)
    return 1.0 - (first - second)


def score_ratio(probs_N_C: np.ndarray) -> np.ndarray:
    """``p_(2) / p_(1)``: in [0, 1], high when the runner-up is nearly as likely as the top class.

    A row whose largest probability is 0 cannot be a probability row; it scores 0 rather than NaN.
    """
    first, second = top_two(probs_N_C)
    return np.divide(second, first, out=np.zeros_like(first), where=first > 0)


def score_entropy(probs_N_C: np.ndarray) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` in nats, with ``0 log 0 = 0`` (no NaN at p = 0)."""
    return entr(np.asarray(probs_N_C, dtype=np.float64)).sum(axis=1)


@register("random", needs=(), family="baseline", reference="the baseline every study compares against",
          description="uniformly random positions from the pool (the baseline)")
def select_random(n: int, *, rng: np.random.Generator, n_pool: int) -> Selection:
    """Choose ``min(n, n_pool)`` distinct pool positions uniformly at random."""
    positions = rng.choice(n_pool, size=min(n, n_pool), replace=False)
    return Selection(positions, np.full(positions.size, np.nan))


def _register_uncertainty(name: str, score, description: str, reference: str) -> None:
    register_score(name, score, needs=("probs_N_C",), family="uncertainty", description=description,
                   reference=reference)


_register_uncertainty("least_confidence", score_least_confidence,
                      "lowest top-class probability (1 - max p)", "Lewis & Gale 1994; " + SETTLES)
_register_uncertainty("margin", score_margin,
                      "smallest gap between the two most likely classes", "Scheffer et al. 2001; " + SETTLES)
_register_uncertainty("ratio", score_ratio,
                      "highest ratio of second to first class probability", SETTLES)
_register_uncertainty("entropy", score_entropy,
                      "highest predictive entropy", "Shannon 1948; Settles & Craven 2008")
