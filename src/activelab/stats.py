"""The statistics of a report: confidence intervals over seeds, the area under the budget curve, labels
needed to reach a target, and the paired comparison of a strategy with random.

Every function here is pure (arrays in, numbers out) and does no input or output, so each has a known
answer that a test can check. The report (:mod:`activelab.report`) applies them to the results store.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import integrate, stats

from activelab.errors import ConfigError

#: Paired differences smaller than this (in absolute value) count as ties (zero): two runs whose curves
#: are equal up to rounding are no evidence for either strategy.
TIE_TOLERANCE = 1e-12


def _finite_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"`{name}` must hold finite numbers only.")
    return array


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` and its two-sided Student t confidence interval.

    ``mean ± t(1 - (1 - confidence) / 2, n - 1) · s / √n`` with ``s`` the sample standard deviation
    (``ddof=1``), treating each value (one per seed) as an independent draw.

    Returns
    -------
    (mean, low, high)
        All NaN for no values; the interval is NaN for a single value (no spread can be estimated) and
        collapses to the mean when every value is the same.
    """
    array = _finite_1d(values, "values")
    n = array.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(array.mean())
    if n == 1:
        return mean, math.nan, math.nan
    sd = float(array.std(ddof=1))
    if sd == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _curve(n_labelled: Sequence[float] | np.ndarray,
           metric: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a learning curve sorted by labels; labels must be distinct."""
    labels = _finite_1d(n_labelled, "n_labelled")
    values = _finite_1d(metric, "metric")
    if labels.size != values.size:
        raise ConfigError(f"a learning curve needs as many label counts as values, "
                          f"got {labels.size} and {values.size}.")
    if labels.size == 0:
        raise ConfigError("a learning curve needs at least one point.")
    order = np.argsort(labels, kind="stable")
    labels, values = labels[order], values[order]
    if np.any(np.diff(labels) == 0):
        raise ConfigError("a learning curve has two points with the same number of labels.")
    return labels, values


def aubc(n_labelled: Sequence[float] | np.ndarray, metric: Sequence[float] | np.ndarray) -> float:
    """The normalised area under the budget curve (AUBC) of one run.

    With the curve's points ``(L_0, a_0), ..., (L_k, a_k)`` sorted by the number of labels ``L``, the AUBC
    is the trapezoid-rule area under the piecewise-linear curve divided by the label range::

        AUBC = sum_i (L_{i+1} - L_i) · (a_i + a_{i+1}) / 2  /  (L_k - L_0)

    that is the mean of the metric over the labels axis, in the metric's own units (an accuracy between
    0 and 1 gives an AUBC between 0 and 1). A curve of a single point (``k = 0``) has the value of that
    point. The AUBC of two runs is comparable only over the same label range.

    Parameters
    ----------
    n_labelled : sequence of numbers
        Labels at each point (distinct, any order).
    metric : sequence of numbers
        The metric (e.g. test accuracy) at each point.

    References
    ----------
    Zhan et al., "A comparative survey of deep active learning" (2022) use the same normalised area to
    compare strategies over a budget.
    """
    labels, values = _curve(n_labelled, metric)
    if labels.size == 1:
        return float(values[0])
    return float(integrate.trapezoid(values, labels) / (labels[-1] - labels[0]))


def labels_to_reach(n_labelled: Sequence[float] | np.ndarray, metric: Sequence[float] | np.ndarray,
                    target: float) -> float | None:
    """The fewest labels at which the curve's metric is at least ``target``, or None if it never is.

    Only measured points count (no interpolation between rounds): the answer is the label count of the
    first point, in label order, whose value is ``>= target``.
    """
    labels, values = _curve(n_labelled, metric)
    reached = np.flatnonzero(values >= target)
    return float(labels[reached[0]]) if reached.size else None


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (Holm 1979), controlling the family-wise error.

    Sorted ascending, the i-th smallest of ``m`` p-values (i from 0) becomes ``min(1, (m - i) · p)``,
    made non-decreasing by a running maximum; the values are returned in the input order. NaN p-values
    (comparisons that could not be tested) are left NaN and not counted in ``m``. Written here because
    scipy has only the Benjamini-Hochberg adjustment and statsmodels is not a dependency.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ConfigError("p-values must lie between 0 and 1.")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def rank_biserial(differences: Sequence[float] | np.ndarray) -> float:
    """The matched-pairs rank-biserial correlation of paired differences (Kerby 2014).

    ``(R+ - R-) / (R+ + R-)`` with ``R+`` and ``R-`` the sums of the ranks of ``|d|`` over positive and
    negative differences, ties (zeros) left out as in the Wilcoxon test: +1 when every nonzero difference
    is positive, -1 when every one is negative, NaN when all are zero.
    """
    d = _ties_to_zero(_finite_1d(differences, "differences"))
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def standardised_mean_difference(differences: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z of paired differences: their mean divided by their sample standard deviation.

    NaN with fewer than two differences or when they are all equal (no spread to scale by).
    """
    d = _finite_1d(differences, "differences")
    if d.size < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    return float(d.mean() / sd) if sd > TIE_TOLERANCE else math.nan


def wilcoxon_p(differences: Sequence[float] | np.ndarray) -> float:
    """The two-sided Wilcoxon signed-rank p-value of paired differences (scipy.stats.wilcoxon).

    Zeros are dropped (scipy's ``zero_method="wilcox"``); with no nonzero difference the strategies do not
    differ on these pairs and the p-value is 1. NaN without any pair. scipy computes the exact p-value for
    small samples without ties, so few pairs cannot give a small p: see :func:`smallest_wilcoxon_p`.
    """
    d = _ties_to_zero(_finite_1d(differences, "differences"))
    if d.size == 0:
        return math.nan
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on its normal approximation with ties
        return float(stats.wilcoxon(d).pvalue)


def smallest_wilcoxon_p(n_pairs: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon test can give with ``n_pairs`` nonzero pairs.

    ``2 / 2**n``: every difference of the same sign. With 5 pairs it is 0.0625, so fewer than 6 seeds can
    never be significant at the 5 % level, however large the difference.
    """
    return min(1.0, 2.0 / 2.0 ** n_pairs) if n_pairs > 0 else math.nan


def paired_bootstrap_ci(differences: Sequence[float] | np.ndarray, *, confidence: float = 0.95,
                        n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap confidence interval of the mean of paired differences.

    The pairs (one per seed) are resampled with replacement, ``n_resamples`` times, by
    ``scipy.stats.bootstrap`` with a generator seeded by ``seed``, so the interval is reproducible. The
    percentile method is used because BCa is undefined when every difference is the same. NaN with fewer
    than two pairs; a single point when all differences are equal.
    """
    d = _finite_1d(differences, "differences")
    if d.size < 2:
        return math.nan, math.nan
    if np.ptp(d) <= TIE_TOLERANCE:
        return float(d.mean()), float(d.mean())
    result = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class PairedComparison:
    """A strategy against a baseline over the same seeds: differences are ``strategy - baseline``.

    ``p_value`` is the two-sided Wilcoxon signed-rank test, ``smallest_p`` the smallest p-value that test
    can give with this many nonzero pairs, ``ci_low``/``ci_high`` the bootstrap interval of the mean
    difference, ``d_z`` the mean difference over the standard deviation of the differences and
    ``rank_biserial`` the matched-pairs rank-biserial correlation. ``wins``/``ties``/``losses`` count the
    seeds where the strategy was above, equal to or below the baseline.
    """

    n_pairs: int
    mean_difference: float
    p_value: float
    smallest_p: float
    ci_low: float
    ci_high: float
    d_z: float
    rank_biserial: float
    wins: int
    ties: int
    losses: int


def compare_paired(strategy: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, *,
                   confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> PairedComparison:
    """Compare paired values (``strategy[i]`` and ``baseline[i]`` from the same seed); see :class:`PairedComparison`."""
    a = _finite_1d(strategy, "strategy")
    b = _finite_1d(baseline, "baseline")
    if a.size != b.size:
        raise ConfigError(f"a paired comparison needs as many values on each side, got {a.size} and {b.size}.")
    d = a - b
    signs = np.sign(_ties_to_zero(d))
    low, high = paired_bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedComparison(
        n_pairs=int(d.size), mean_difference=float(d.mean()) if d.size else math.nan, p_value=wilcoxon_p(d),
        smallest_p=smallest_wilcoxon_p(int(np.count_nonzero(signs))), ci_low=low, ci_high=high,
        d_z=standardised_mean_difference(d), rank_biserial=rank_biserial(d), wins=int(np.sum(signs > 0)),
        ties=int(np.sum(signs == 0)), losses=int(np.sum(signs < 0)))


def imbalance_ratio(counts: Sequence[float] | np.ndarray) -> float:
    """The largest class count divided by the smallest: 1 for a balanced set, ``inf`` when a class is absent.

    NaN for no classes or no items at all.
    """
    array = _finite_1d(counts, "counts")
    if array.size == 0 or array.max() <= 0:
        return math.nan
    smallest = array.min()
    return float(array.max() / smallest) if smallest > 0 else math.inf


def _ties_to_zero(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) <= TIE_TOLERANCE, 0.0, d)
