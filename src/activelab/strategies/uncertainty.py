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


#: Rows per block of the float32 passes below (a block's temporaries stay in cache).
BLOCK_ROWS = 16384
_EPS32 = float(np.finfo(np.float32).eps)


def _work_dtype(array: np.ndarray) -> type:
    """float32 and float64 inputs are read as they are; other numbers as float64 (exactly, as before)."""
    return array.dtype.type if array.dtype in (np.float32, np.float64) else np.float64


def top_two(probs_N_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the largest and second-largest probability of each row (0 as second with one class).

    The values are elements of the input (as float64), so they are exact whatever the input's dtype; they
    are found block by block with a running (first, second) pair over the columns, in the input's dtype,
    instead of a per-row partition of a float64 copy.
    """
    probs_N_C = np.asarray(probs_N_C)
    n_pool, n_classes = probs_N_C.shape
    if n_classes == 1:
        return np.asarray(probs_N_C[:, 0], dtype=np.float64), np.zeros(n_pool)
    dtype = _work_dtype(probs_N_C)
    first_N, second_N = np.empty(n_pool), np.empty(n_pool)
    for start in range(0, n_pool, BLOCK_ROWS):
        columns = np.asarray(probs_N_C[start:start + BLOCK_ROWS].T, dtype=dtype, order="C")
        first, second = columns[0].copy(), np.full(columns.shape[1], -np.inf, dtype=dtype)
        lower = np.empty_like(first)
        for column in columns[1:]:
            np.minimum(first, column, out=lower)
            np.maximum(second, lower, out=second)
            np.maximum(first, column, out=first)
        first_N[start:start + BLOCK_ROWS], second_N[start:start + BLOCK_ROWS] = first, second
    return first_N, second_N


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
    """Predictive entropy ``-sum_c p_c log p_c`` in nats, with ``0 log 0 = 0`` (no NaN at p = 0).

    Computed in float64 on blocks of rows, so no float64 copy of the whole pool is made.
    """
    probs_N_C = np.asarray(probs_N_C)
    scores_N = np.empty(probs_N_C.shape[0])
    for start in range(0, probs_N_C.shape[0], BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        scores_N[rows] = entr(np.asarray(probs_N_C[rows], dtype=np.float64)).sum(axis=1)
    return scores_N


def entropy_float32(probs_n_C: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` of one block in float32 (``0 log 0 = 0``), summed by a matrix product."""
    probs = np.asarray(probs_n_C, dtype=np.float32)
    terms = np.log(probs, out=np.zeros_like(probs), where=probs > 0)
    terms *= probs
    return -(terms @ np.ones(probs.shape[-1], dtype=np.float32))


def entropy_tolerance(n_classes: int) -> float:
    """A bound, with a safety factor of about 4, on ``|entropy_float32 - score_entropy|`` for rows in [0, 1].

    Per class: rounding the input to float32 and the float32 log and product (a few ulp of terms at most
    1/e); per row: the float32 sum of C such terms.
    """
    return 4.0 * _EPS32 * (2 + n_classes + n_classes * n_classes)


def _approximate_entropy(probs_N_C: np.ndarray) -> tuple[np.ndarray, float]:
    probs_N_C = np.asarray(probs_N_C)
    approx_N = np.empty(probs_N_C.shape[0], dtype=np.float32)
    for start in range(0, probs_N_C.shape[0], BLOCK_ROWS):
        approx_N[start:start + BLOCK_ROWS] = entropy_float32(probs_N_C[start:start + BLOCK_ROWS])
    return approx_N, entropy_tolerance(probs_N_C.shape[1])


score_entropy.approximate = _approximate_entropy


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
