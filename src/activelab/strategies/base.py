"""The strategy contract: pure functions over arrays, a registry, and the shared top-k selector.

A strategy takes the arrays it declares in ``needs`` (named by :data:`INPUTS`), a batch size ``n`` and a
``numpy.random.Generator``, and returns a :class:`Selection`: ``min(n, N)`` unique pool positions in
priority order, with the score that placed each one. Higher scores are always more informative, so
wrappers (power sampling, pre-sampling) compose without direction flags. Strategies never touch a model,
a file or global random state; the loop computes their inputs through :mod:`activelab.inference`.

Most strategies are "a score, then the top ``n``": :func:`register_score` registers one from its score
function. Pool-sized temporaries are bounded with :func:`chunk_slices`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np

from activelab.errors import ConfigError
from activelab.validation import check_array, check_int, check_probabilities, check_rng

#: Inputs a strategy may ask for, with their shapes. The loop knows how to compute each of them.
INPUTS: dict[str, str] = {
    "probs_N_C": "class probabilities of each pool item, deterministic model (dropout off)",
    "probs_T_N_C": "class probabilities of T stochastic passes (MC dropout in the head only)",
    "emb_N_D": "penultimate-layer embedding of each pool item",
    "labelled_emb_M_D": "penultimate-layer embedding of each labelled item",
    "logits_N_C": "pre-softmax class scores (logits) of each pool item, deterministic model (dropout off)",
    "act_mean_N_L": "mean over units of each pool item's activations at L layers (backbone output, head hidden "
                    "layer, logits)",
    "act_max_N_L": "max over units of each pool item's activations at the same L layers as act_mean_N_L",
    "grad_emb_N_D": "gradient embedding of the last layer at the predicted label (BADGE)",
    "p_wrong_N": "P(model is wrong) from a correct/incorrect head trained on a held-out labelled split (ATL)",
    "p_unlabelled_N": "P(item is unlabelled) from a labelled-vs-pool discriminator head (DAL)",
}


#: Upper bound on the float64 elements of one chunk's temporaries (2**22 elements = 32 MiB). Chunks are
#: sized in elements rather than items so that many passes, classes or dimensions do not blow the bound.
CHUNK_ELEMENTS = 2**22


def chunk_slices(n_pool: int, elements_per_item: int) -> Iterator[slice]:
    """Yield consecutive slices of ``range(n_pool)`` holding at most ``CHUNK_ELEMENTS`` elements each.

    Parameters
    ----------
    n_pool : int
        Number of pool items N.
    elements_per_item : int
        Size of the largest temporary per item (for example ``T * C``).

    Returns
    -------
    Iterator[slice]
        Slices covering ``0..N`` in order, each of at least one item.
    """
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_item))
    for start in range(0, n_pool, step):
        yield slice(start, start + step)


@dataclass(frozen=True)
class Selection:
    """Pool positions chosen by a strategy, in priority order, with the score behind each pick.

    ``scores[i]`` is the value that placed ``positions[i]`` (NaN where a strategy has no per-item score,
    such as random sampling).
    """

    positions: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", np.asarray(self.positions, dtype=np.int64))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64))
        if self.positions.shape != self.scores.shape:
            raise ValueError("positions and scores must have the same length")


def select_top(scores_N: np.ndarray, n: int, *, rng: np.random.Generator) -> Selection:
    """Pick the ``n`` highest scores without sorting the whole pool.

    Uses ``argpartition`` (O(N)) and sorts only the chosen ``n``. Ties at the boundary are broken at
    random with ``rng``, so equal scores do not favour the start of the pool; the chosen items are
    returned by decreasing score, ties again in ``rng`` order. ``n >= N`` returns the whole pool.
    """
    scores_N = np.asarray(scores_N, dtype=np.float64)
    n_pool = scores_N.shape[0]
    n = min(n, n_pool)
    if n == 0:
        return Selection(np.empty(0, np.int64), np.empty(0))
    threshold = np.partition(scores_N, n_pool - n)[n_pool - n]
    above = np.flatnonzero(scores_N > threshold)
    tied = np.flatnonzero(scores_N == threshold)
    n_from_ties = n - above.size
    if n_from_ties < tied.size:
        tied = rng.choice(tied, size=n_from_ties, replace=False)
    chosen = np.concatenate([above, tied])
    tie_break = rng.random(chosen.size)
    order = np.lexsort((tie_break, -scores_N[chosen]))
    chosen = chosen[order]
    return Selection(chosen, scores_N[chosen])


def _take(name: str, array: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The pool items at ``positions`` of input ``name`` (the pool is axis 1 of ``probs_T_N_C``)."""
    if name == "labelled_emb_M_D":
        return array
    taken = array[:, positions] if name == "probs_T_N_C" else array[positions]
    return np.ascontiguousarray(taken)   # fancy indexing may lay the pool axis out first; reductions follow layout


def select_top_refined(score: Callable[..., np.ndarray], arrays: Mapping[str, np.ndarray],
                       options: Mapping[str, object], n: int, *, rng: np.random.Generator) -> Selection:
    """:func:`select_top` of ``score``, computing the exact score only for the items that can make the cut.

    ``score.approximate(**arrays, **options)`` returns cheap scores (float32, in chunks) and a bound
    ``tol`` on their distance to the exact ones. If the n-th highest approximate score is ``a``, every
    item whose exact score reaches the exact n-th score has an approximate score of at least ``a - 2 tol``:
    those candidates (in pool order) get their exact score, and :func:`select_top` on them draws the same
    random numbers on the same tied items as on the whole pool, so the selection and its scores are
    identical to ``select_top(score(**arrays), n)``.
    """
    approx_N, tol = score.approximate(**arrays, **options)
    n_pool = approx_N.shape[0]
    if n >= n_pool:
        return select_top(score(**arrays, **options), n, rng=rng)
    threshold = np.partition(approx_N, n_pool - n)[n_pool - n]
    if not np.isfinite(threshold) or not np.isfinite(approx_N).all():
        return select_top(score(**arrays, **options), n, rng=rng)
    candidates = np.flatnonzero(approx_N >= threshold - 2.0 * tol)
    if candidates.size > n_pool // 2:
        return select_top(score(**arrays, **options), n, rng=rng)
    subset = {name: _take(name, np.asarray(array), candidates) for name, array in arrays.items()}
    chosen = select_top(score(**subset, **options), n, rng=rng)
    return Selection(candidates[chosen.positions], chosen.scores)


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: the pure selection function plus what it needs and where it comes from."""

    name: str
    select: Callable[..., Selection]
    needs: tuple[str, ...]
    description: str
    reference: str
    family: str
    options: Mapping[str, object] = field(default_factory=dict)

    def __call__(self, n: int, *, rng: np.random.Generator, n_pool: int | None = None,
                 **inputs: object) -> Selection:
        """Validate the public inputs once, then run the strategy on them.

        ``inputs`` holds the arrays named in ``needs`` plus any of the strategy's ``options``; other
        arrays are ignored, so a caller may pass everything it has computed. ``n_pool`` is only needed
        by strategies that use no array (random sampling).
        """
        n = check_int(n, "n", minimum=1)
        rng = check_rng(rng)
        missing = [name for name in self.needs if name not in inputs]
        if missing:
            raise ConfigError(f"strategy '{self.name}' needs the input(s) {', '.join(missing)}.")
        checked = {name: _check_input(name, inputs[name]) for name in self.needs}
        sizes = _check_same_pool(self.name, checked)
        options = {key: value for key, value in inputs.items() if key in self.options}
        if not self.needs:
            if n_pool is None:
                raise ConfigError(f"strategy '{self.name}' needs the pool size `n_pool`.")
            options["n_pool"] = check_int(n_pool, "n_pool", minimum=0)
        elif n_pool is not None and sizes and n_pool not in sizes:
            raise ConfigError(f"`n_pool`={n_pool} does not match the inputs' pool size {sizes.pop()}.")
        return self.select(n, rng=rng, **checked, **options)

    def on_computed_inputs(self, n: int, *, rng: np.random.Generator, n_pool: int, **inputs: object) -> Selection:
        """Run the strategy on inputs activelab computed itself (the loop's path), skipping the public call's
        checks: the arrays come from one pool pass and are well formed by construction, and checking them
        again would cost a full pass over the pool per round. Same arguments as calling the strategy."""
        arguments = {key: value for key, value in inputs.items() if key in self.needs or key in self.options}
        if not self.needs:
            arguments["n_pool"] = n_pool
        return self.select(n, rng=rng, **arguments)


def _check_input(name: str, value: np.ndarray) -> np.ndarray:
    if name == "probs_N_C":
        return check_probabilities(value, name, ndim=2)
    if name == "probs_T_N_C":
        probs = check_probabilities(value, name, ndim=3)
        if probs.shape[0] < 1:
            raise ConfigError(f"`{name}` needs at least one stochastic pass, got shape {probs.shape}.")
        return probs
    if name.endswith("_N"):
        return check_array(value, name, ndim=1)
    return check_array(value, name, ndim=2)


def _pool_size(name: str, value: np.ndarray) -> int | None:
    if name == "labelled_emb_M_D":
        return None
    return value.shape[1] if name == "probs_T_N_C" else value.shape[0]


def _check_same_pool(strategy: str, inputs: Mapping[str, np.ndarray]) -> set[int]:
    sizes = {name: _pool_size(name, value) for name, value in inputs.items()}
    sizes = {name: size for name, size in sizes.items() if size is not None}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise ConfigError(f"strategy '{strategy}' got inputs for pools of different sizes ({described}).")
    return set(sizes.values())


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, *, needs: tuple[str, ...], description: str, reference: str,
             family: str, **options: object) -> Callable[[Callable[..., Selection]], Callable[..., Selection]]:
    """Decorator that adds a selection function to the registry under ``name``.

    ``needs`` lists input names from :data:`INPUTS`; ``options`` are extra keyword arguments the loop
    may pass (for example ``mc_samples``), recorded here so the CLI can list them.
    """
    unknown = [need for need in needs if need not in INPUTS]
    if unknown:
        raise ValueError(f"unknown strategy inputs {unknown}")

    def add(select: Callable[..., Selection]) -> Callable[..., Selection]:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} is registered twice")
        _REGISTRY[name] = Strategy(name, select, tuple(needs), description, reference, family, dict(options))
        return select

    return add


def register_score(name: str, score: Callable[..., np.ndarray], *, needs: tuple[str, ...], family: str,
                   description: str, reference: str, **options: object) -> Callable[..., Selection]:
    """Register the strategy "``score``, then the ``n`` highest scores" (:func:`select_top`) under ``name``.

    Parameters
    ----------
    name : str
        Registry name of the strategy.
    score : callable
        ``score(**arrays, **options) -> scores_N``, higher more informative. Its array parameters are named
        as the inputs in ``needs`` and its options as in ``options``; both are passed by keyword.
    needs : tuple of str
        Input names from :data:`INPUTS`.
    family, description, reference : str
        As for :func:`register`.
    **options
        The score's options with their defaults; a caller's value replaces the default and the score
        checks it.

    Returns
    -------
    callable
        The generated selection function (also in the registry), with ``score`` as its ``score`` attribute.
    """
    needs = tuple(needs)

    def select(n: int, *, rng: np.random.Generator, **inputs: object) -> Selection:
        arrays = {need: inputs[need] for need in needs}
        chosen = {key: inputs.get(key, default) for key, default in options.items()}
        if getattr(score, "approximate", None) is not None:
            return select_top_refined(score, arrays, chosen, n, rng=rng)
        return select_top(score(**arrays, **chosen), n, rng=rng)

    add = register(name, needs=needs, family=family, description=description, reference=reference, **options)
    select.__name__ = select.__qualname__ = f"select_{name}"
    select.__module__ = score.__module__
    select.__doc__ = _score_docstring(name, score, needs, description, reference, options)
    select.score = score
    return add(select)


def _score_docstring(name: str, score: Callable[..., np.ndarray], needs: tuple[str, ...], description: str,
                     reference: str, options: Mapping[str, object]) -> str:
    """The numpydoc docstring of a strategy built by :func:`register_score`."""
    target = f":func:`~{score.__module__}.{score.__name__}`"
    lines = [f"Pick the ``n`` pool items with the highest {name.replace('_', ' ')} score: {description}.", "",
             f"The score is {target}; the ``n`` highest are chosen by :func:`~activelab.strategies.base.select_top`.",
             "", "Parameters", "----------", "n : int", "    Batch size; ``min(n, N)`` items are returned.",
             "rng : numpy.random.Generator", "    Breaks ties at the boundary and among the chosen items."]
    for need in needs:
        lines += [f"{need} : numpy.ndarray", f"    {INPUTS[need][0].upper()}{INPUTS[need][1:]}."]
    for key, default in options.items():
        lines += [f"{key} : {type(default).__name__}, default {default!r}", f"    Passed to {target}."]
    lines += ["", "Returns", "-------", "Selection",
              "    Pool positions by decreasing score, with the score of each.", "",
              "References", "----------", f".. [1] {reference}."]
    return "\n".join(lines)


def registry() -> dict[str, Strategy]:
    """All registered strategies by name (the families are imported by :mod:`activelab.strategies`)."""
    return dict(_REGISTRY)
