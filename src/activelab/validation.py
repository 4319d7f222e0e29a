"""Input checks for the public boundary: each failure is one sentence naming argument, value and bound."""

from __future__ import annotations

import numbers

import numpy as np

from activelab.errors import ConfigError


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"`{name}`={value!r} must be an integer.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}`={value} must be >= {minimum}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"`{name}`={value} must be <= {maximum}.")
    return value


def check_float(value: object, name: str, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:
    """Return ``value`` as a finite ``float`` within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ConfigError(f"`{name}`={value!r} must be a finite number.")
    value = float(value)
    if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
        relation = ">" if exclusive_minimum else ">="
        raise ConfigError(f"`{name}`={value} must be {relation} {minimum}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"`{name}`={value} must be <= {maximum}.")
    return value


def check_rng(rng: object) -> np.random.Generator:
    """Require an explicit ``numpy.random.Generator`` (no global random state, no integer seeds)."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}.")
    return rng


#: Elements per block of the one-pass checks: small enough that a block's temporaries stay in cache.
CHECK_BLOCK_ELEMENTS = 2**18


def _row_blocks(array: np.ndarray):
    """Yield 2-D views ``[rows, last axis]`` of ``array`` holding at most ``CHECK_BLOCK_ELEMENTS`` each (no copies)."""
    if array.ndim > 2 and not array.flags.c_contiguous:
        for part in array:
            yield from _row_blocks(part)
        return
    rows = array.reshape(-1, 1) if array.ndim == 1 else array.reshape(-1, array.shape[-1])
    step = max(1, CHECK_BLOCK_ELEMENTS // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        yield rows[start:start + step]


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite, block by block: min and max propagate NaN and surface infinities."""
    if array.dtype.kind != "f" or not array.size:
        return True
    return all(np.isfinite(block.min()) and np.isfinite(block.max()) for block in _row_blocks(array))


def check_array(array: object, name: str, *, ndim: int) -> np.ndarray:
    """Return ``array`` as a numpy array after checking its number of axes, that it holds numbers, and finiteness.

    The finiteness check reads the array once, block by block, without a copy or a full-size temporary.
    """
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ConfigError(f"`{name}` must have {ndim} axes, got shape {array.shape}.")
    if array.dtype.kind not in "fiu":
        raise ConfigError(f"`{name}` must hold numbers, got dtype {array.dtype}.")
    if not _all_finite(array):
        raise ConfigError(f"`{name}` contains NaN or infinite values.")
    return array


def check_probabilities(probs: object, name: str, *, ndim: int, atol: float = 1e-3) -> np.ndarray:
    """Check that ``probs`` holds class probabilities (last axis sums to 1, values in [0, 1]).

    One pass over the array in its own dtype, block by block (no float64 copy, temporaries of one block):
    each block's minimum and maximum (NaN propagates through both) and its row sums. The errors keep their
    priority: axes, dtype, NaN or infinity, range, then the row furthest from summing to 1.
    """
    probs = np.asarray(probs)
    if probs.ndim != ndim:
        raise ConfigError(f"`{name}` must have {ndim} axes, got shape {probs.shape}.")
    if probs.dtype.kind not in "fiu":
        raise ConfigError(f"`{name}` must hold numbers, got dtype {probs.dtype}.")
    if probs.shape[-1] < 1:
        raise ConfigError(f"`{name}` must have at least one class column, got shape {probs.shape}.")
    if not probs.size:
        return probs
    finite, in_range = True, True
    worst, worst_gap = 1.0, 0.0
    ones = np.ones(probs.shape[-1], dtype=probs.dtype) if probs.dtype.kind == "f" else None
    for block in _row_blocks(probs):
        low, high = block.min(), block.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            finite = False
            break
        if low < -atol or high > 1 + atol:
            in_range = False
            continue
        if in_range:
            sums = block @ ones if ones is not None else block.sum(axis=-1)
            gaps = np.abs(sums - 1.0)
            row = int(np.argmax(gaps))
            if gaps[row] > worst_gap:
                worst, worst_gap = float(sums[row]), float(gaps[row])
    if not finite:
        raise ConfigError(f"`{name}` contains NaN or infinite values.")
    if not in_range:
        raise ConfigError(f"`{name}` must hold probabilities in [0, 1].")
    if worst_gap > atol * max(1, probs.shape[-1]) + 1e-5:   # np.allclose(sums, 1, atol) with its rtol of 1e-5
        raise ConfigError(f"`{name}` rows must sum to 1 over classes, found a row summing to {worst:.4g}.")
    return probs
