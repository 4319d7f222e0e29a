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


def check_array(array: object, name: str, *, ndim: int) -> np.ndarray:
    """Return ``array`` as a numpy array after checking its number of axes, that it holds numbers, and finiteness."""
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ConfigError(f"`{name}` must have {ndim} axes, got shape {array.shape}.")
    if array.dtype.kind not in "fiu":
        raise ConfigError(f"`{name}` must hold numbers, got dtype {array.dtype}.")
    if array.size and not np.isfinite(array).all():
        raise ConfigError(f"`{name}` contains NaN or infinite values.")
    return array


def check_probabilities(probs: object, name: str, *, ndim: int, atol: float = 1e-3) -> np.ndarray:
    """Check that ``probs`` holds class probabilities (last axis sums to 1, values in [0, 1])."""
    probs = check_array(probs, name, ndim=ndim)
    if probs.shape[-1] < 1:
        raise ConfigError(f"`{name}` must have at least one class column, got shape {probs.shape}.")
    if probs.size:
        if probs.min() < -atol or probs.max() > 1 + atol:
            raise ConfigError(f"`{name}` must hold probabilities in [0, 1].")
        sums = probs.sum(axis=-1)
        if not np.allclose(sums, 1.0, atol=atol * max(1, probs.shape[-1])):
            worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
            raise ConfigError(f"`{name}` rows must sum to 1 over classes, found a row summing to {worst:.4g}.")
    return probs
