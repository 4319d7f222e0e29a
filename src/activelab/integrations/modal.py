"""Use activelab's strategies as modAL query strategies.

:func:`query_strategy` wraps a registered strategy as a callable with modAL's query-strategy signature,
``f(classifier, X_pool, n_instances=1, **options) -> (indices, scores)``, so it can be given to
``modAL.models.ActiveLearner(query_strategy=...)``. The strategy's inputs (see
:data:`activelab.strategies.INPUTS`) are computed from the estimator and the pool:

- ``probs_N_C``: ``classifier.predict_proba(X_pool)``.
- ``probs_T_N_C``: ``mc_samples`` forward passes of the estimator's torch ``module_`` (a skorch
  ``NeuralNetClassifier``, or any estimator exposing one) under *consistent* MC dropout
  (:class:`activelab.mcdropout.ConsistentDropout`): pass ``t`` multiplies the input of every
  ``nn.Dropout`` layer by one mask shared by every pool item and every forward batch, so each pass is one
  sampled network, as BatchBALD's joint mutual information assumes (Kirsch et al. 2019), and ten copies
  of one image get one score. The masks are seeded from the query strategy's generator at each query;
  every layer runs in eval mode (BatchNorm uses and keeps its running statistics, the study's modAL code
  put the whole model in train mode, defect 13) and the module's modes are restored afterwards. A module
  without an ``nn.Dropout`` with ``p > 0`` is refused at the first query, since its passes would all be
  one network and BALD would score every item zero (other dropout variants, such as ``nn.Dropout2d``,
  are refused rather than ignored); ``mc_samples`` must be at least 2, checked when the query strategy
  is built.
- ``emb_N_D``: ``embed(X_pool)`` when an ``embed`` callable is given, otherwise the pool itself, each item
  flattened to one row (pixels for images, features for scikit-learn estimators).
- ``labelled_emb_M_D``: the same embedding of ``classifier.X_training``, which modAL's ``ActiveLearner``
  keeps; no labelled item (``M = 0``) when the classifier holds none.

Any other input (layer activations, BADGE gradients, auxiliary heads) must be given as a callable in
``compute``. A strategy whose inputs cannot be provided is refused when the query strategy is built, not
at the first query. modAL's own strategies return ``(indices, metrics)``; so does this adapter, with
activelab's scores (higher is more informative), and ``ActiveLearner.query`` returns
``(indices, X_pool[indices])`` as usual.

Installing: ``pip install 'activelab[modal]'`` adds modAL (``modAL-python``, imported as ``modAL``).

modAL 0.4.2.1 under scikit-learn >= 1.8
    modAL's ``ActiveLearner.fit`` and ``teach`` validate their data with
    ``sklearn.utils.check_X_y(..., force_all_finite=...)``, an argument scikit-learn 1.6 renamed to
    ``ensure_all_finite`` and 1.8 removed, so the first ``teach`` fails with a ``TypeError``. Importing
    this module calls :func:`patch_modal`, which gives modAL's learners a ``check_X_y`` that passes the
    value on as ``ensure_all_finite``; it changes nothing else, and nothing at all when modAL is not
    installed or scikit-learn still accepts ``force_all_finite``. Building a query strategy means this
    module is imported, so a modAL loop that uses one teaches without further steps; a modAL loop that
    uses none of activelab's strategies can call :func:`patch_modal` itself.

The command line and this module
    ``activelab run --al-query-strategy NAME`` accepts the study's modAL routine names
    (``uncertainty_sampling``, ``margin_sampling``, ``entropy_sampling``, ``random``, ``bald``,
    ``max_entropy``, ``cluster_outlier_combined``, ``outlier``); the command line maps each to the
    registered strategy that computes it and runs activelab's own resumable loop (:mod:`activelab.loop`),
    which neither needs nor imports modAL. This module is for people who keep their own modAL loop
    (``ActiveLearner``, ``query``, ``teach``) and want activelab's strategies in it; it uses the same
    registered strategies, by their activelab names (``activelab strategies`` lists them, and
    :func:`modal_strategies` those a modAL estimator can feed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from activelab.errors import BudgetExceededError, ConfigError
from activelab.mcdropout import ConsistentDropout, dropout_layers
from activelab.strategies import INPUTS, Strategy, get_strategy, registry
from activelab.validation import check_int

#: Inputs this adapter computes from a modAL estimator and the pool; others need a ``compute`` callable.
BUILT_IN_INPUTS = ("probs_N_C", "probs_T_N_C", "emb_N_D", "labelled_emb_M_D")
#: What a torch module's forward may return: raw class scores (softmax is applied) or probabilities.
MODULE_OUTPUTS = ("logits", "probs")

ArrayFunction = Callable[[object], np.ndarray]


def modal_strategies() -> list[str]:
    """Names of the registered strategies that run under modAL without extra ``compute`` callables.

    Returns
    -------
    list of str
        Sorted strategy names whose inputs are all in :data:`BUILT_IN_INPUTS`.
    """
    return sorted(name for name, strategy in registry().items() if set(strategy.needs) <= set(BUILT_IN_INPUTS))


def query_strategy(name: str, *, rng: int | np.random.Generator | None = None, mc_samples: int = 10,
                   outputs: str | None = None, embed: ArrayFunction | None = None,
                   compute: Mapping[str, ArrayFunction] | None = None, batch_size: int = 256,
                   **options: object) -> ModalQueryStrategy:
    """Build a modAL query strategy from the registered strategy ``name``.

    Parameters
    ----------
    name : str
        A registered strategy (hyphens or underscores); :func:`modal_strategies` lists those that need
        no ``compute`` callable.
    rng : int, numpy.random.Generator or None, default None
        Seed of the generator the query strategy keeps and draws from at every query, so a sequence of
        queries is reproducible; a Generator is used as it is, None seeds one from the operating system.
    mc_samples : int, default 10
        Stochastic passes ``T`` for strategies that need ``probs_T_N_C``; at least 2 (one pass carries
        no uncertainty).
    outputs : {"logits", "probs"} or None, default None
        What the torch module's forward returns; required by strategies that need ``probs_T_N_C``
        (the adapter never guesses it from the values).
    embed : callable or None, default None
        ``embed(X) -> array`` with one row per item, used for ``emb_N_D`` and ``labelled_emb_M_D``;
        None uses the flattened items themselves.
    compute : mapping of str to callable, optional
        ``{input name: f(X_pool) -> array}`` for inputs the adapter cannot compute (for example
        ``"grad_emb_N_D"`` for BADGE). A callable that depends on the model should close over the
        estimator object, which modAL refits in place.
    batch_size : int, default 256
        Pool items per forward pass of the torch module.
    **options
        The strategy's own options (for example ``beta`` for power sampling), as listed in the registry.

    Returns
    -------
    ModalQueryStrategy
        A callable ``f(classifier, X_pool, n_instances=1, **options) -> (indices, scores)``.

    Raises
    ------
    ConfigError
        If ``name`` is unknown, an input of the strategy cannot be provided, ``outputs`` is missing for
        an MC strategy, ``mc_samples`` is below 2, or an option is unknown or out of range.

    Examples
    --------
    >>> from modAL.models import ActiveLearner
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = ActiveLearner(estimator=LogisticRegression(max_iter=2000),
    ...                         query_strategy=query_strategy("margin", rng=0),
    ...                         X_training=X[:50], y_training=y[:50])
    >>> indices, items = learner.query(X[50:], n_instances=5)
    >>> items.shape
    (5, 64)
    """
    strategy = get_strategy(name)
    compute = dict(compute or {})
    _check_providers(strategy, compute, embed)
    if outputs is not None:
        _check_outputs(outputs)
    elif "probs_T_N_C" in strategy.needs:
        raise ConfigError(f"strategy '{strategy.name}' runs the torch module itself; pass outputs='logits' or "
                          "outputs='probs' to say what its forward returns.")
    return ModalQueryStrategy(strategy, rng=_generator(rng), mc_samples=check_int(mc_samples, "mc_samples", minimum=2),
                              outputs=outputs, embed=embed, compute=compute,
                              batch_size=check_int(batch_size, "batch_size", minimum=1),
                              options=_check_options(strategy, options))


class ModalQueryStrategy:
    """A registered strategy with modAL's query-strategy signature; build it with :func:`query_strategy`.

    It holds its own ``numpy.random.Generator``, so each query draws fresh random numbers (tie breaks,
    sampling, dropout masks) and the same seed reproduces the same sequence of queries.
    """

    def __init__(self, strategy: Strategy, *, rng: np.random.Generator, mc_samples: int, outputs: str | None,
                 embed: ArrayFunction | None, compute: Mapping[str, ArrayFunction], batch_size: int,
                 options: Mapping[str, object]) -> None:
        self.strategy = strategy
        self.rng = rng
        self.mc_samples = mc_samples
        self.outputs = outputs
        self.embed = embed
        self.compute = dict(compute)
        self.batch_size = batch_size
        self.options = dict(options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.strategy.name!r})"

    def __call__(self, classifier: object, X_pool: object, n_instances: int = 1,
                 **options: object) -> tuple[np.ndarray, np.ndarray]:
        """Choose ``n_instances`` pool items for ``classifier`` (modAL passes its ``ActiveLearner``).

        Parameters
        ----------
        classifier : object
            A fitted estimator with ``predict_proba``, or a modAL learner wrapping one.
        X_pool : array-like, shape (N, ...)
            The unlabelled items.
        n_instances : int, default 1
            How many items to choose.
        **options
            Strategy options for this query only, overriding those given to :func:`query_strategy`.

        Returns
        -------
        indices : numpy.ndarray of int64, shape (n_instances,)
            Positions in ``X_pool``, most informative first.
        scores : numpy.ndarray of float64, shape (n_instances,)
            The score that placed each item (higher is more informative; NaN where the strategy has none).

        Raises
        ------
        BudgetExceededError
            If ``n_instances`` exceeds the pool size.
        ConfigError
            If the classifier cannot provide an input (no torch ``module_``, or one without an
            ``nn.Dropout`` with ``p > 0``, for an MC strategy) or an option is unknown.
        """
        n = check_int(n_instances, "n_instances", minimum=1)
        n_pool = X_pool.shape[0] if hasattr(X_pool, "shape") else len(X_pool)
        if n > n_pool:
            raise BudgetExceededError(f"`n_instances`={n} must be <= pool size {n_pool}.")
        options = {**self.options, **_check_options(self.strategy, options)}
        inputs = self._inputs(classifier, X_pool)
        selection = self.strategy(n, rng=self.rng, n_pool=n_pool, **inputs, **options)
        return selection.positions, selection.scores

    def _inputs(self, classifier: object, X_pool: object) -> dict[str, np.ndarray]:
        needs = self.strategy.needs
        inputs = {name: np.asarray(self.compute[name](X_pool)) for name in needs if name in self.compute}
        if "probs_N_C" in needs:
            inputs["probs_N_C"] = np.asarray(classifier.predict_proba(X_pool))
        if "probs_T_N_C" in needs:
            inputs["probs_T_N_C"] = mc_probabilities(
                _dropout_module(self.strategy.name, classifier), X_pool, mc_samples=self.mc_samples,
                outputs=self.outputs, seed=int(self.rng.integers(2**63 - 1)), batch_size=self.batch_size)
        if "emb_N_D" in needs or "labelled_emb_M_D" in needs:
            inputs["emb_N_D"] = self._embedding(X_pool)
        if "labelled_emb_M_D" in needs:
            labelled = getattr(classifier, "X_training", None)
            width = inputs["emb_N_D"].shape[1]
            inputs["labelled_emb_M_D"] = np.empty((0, width)) if labelled is None else self._embedding(labelled)
        return inputs

    def _embedding(self, X: object) -> np.ndarray:
        emb = np.asarray(X if self.embed is None else self.embed(X))
        return emb.reshape(emb.shape[0], -1)


@torch.no_grad()
def mc_probabilities(module: nn.Module, X: object, *, mc_samples: int, outputs: str, seed: int,
                     batch_size: int = 256) -> np.ndarray:
    """Class probabilities of ``mc_samples`` consistent MC-dropout passes over ``X``.

    Pass ``t`` is one sampled network: :class:`activelab.mcdropout.ConsistentDropout` multiplies the
    input of each ``nn.Dropout`` layer by a mask that depends on ``(seed, layer, t)`` only, so every item
    and every batch of ``X`` sees the same mask in that pass, and the result does not depend on
    ``batch_size``. Every layer runs in eval mode (BatchNorm uses and keeps its running statistics), and
    every layer's mode is restored afterwards; the global torch random state is not touched.

    Parameters
    ----------
    module : torch.nn.Module
        The network, holding at least one ``nn.Dropout`` with ``p > 0``; its forward takes a batch of
        ``X`` and returns one row per item (or a tuple whose first element is that, as skorch allows).
    X : array-like, shape (N, ...)
        Items; floating-point arrays are cast to the dtype of the module's parameters.
    mc_samples : int
        Number of passes ``T``, at least 2.
    outputs : {"logits", "probs"}
        Whether the forward returns logits (softmax is applied) or probabilities (used as they are).
    seed : int
        Seed of the dropout masks (non-negative).
    batch_size : int, default 256
        Items per forward pass.

    Returns
    -------
    numpy.ndarray of float64, shape (T, N, C)

    Raises
    ------
    ConfigError
        If ``module`` has no ``nn.Dropout`` with ``p > 0`` (or another dropout variant), ``mc_samples``
        is below 2, or ``outputs`` is not one of :data:`MODULE_OUTPUTS`.
    """
    _check_outputs(outputs)
    mc_samples = check_int(mc_samples, "mc_samples", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    X = np.asarray(X)
    chunks = []
    with ConsistentDropout(module, n_samples=mc_samples, seed=seed) as masks:
        for start in range(0, X.shape[0], batch_size):
            batch = torch.as_tensor(X[start:start + batch_size], device=device)
            if batch.is_floating_point() and parameter is not None:
                batch = batch.to(parameter.dtype)
            passes = []
            for sample in range(mc_samples):
                masks.use(sample)
                passes.append(_probabilities(module(batch), outputs))
            chunks.append(torch.stack(passes))
    return torch.cat(chunks, dim=1).cpu().numpy()


def _probabilities(output: torch.Tensor | tuple, outputs: str) -> torch.Tensor:
    scores = output[0] if isinstance(output, tuple) else output
    scores = scores.double()
    return torch.softmax(scores, dim=1) if outputs == "logits" else scores


def _dropout_module(strategy: str, classifier: object) -> nn.Module:
    """The fitted torch module of ``classifier`` (or of the estimator a modAL learner wraps), with dropout."""
    estimator = getattr(classifier, "estimator", classifier)
    module = getattr(estimator, "module_", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"strategy '{strategy}' needs MC-dropout passes, but {type(estimator).__name__} has no "
                          "fitted torch `module_` (use a skorch NeuralNetClassifier or similar).")
    if not dropout_layers(module):
        raise ConfigError(f"strategy '{strategy}' needs MC-dropout passes, but the {type(module).__name__} module "
                          "has no nn.Dropout with p > 0, so every pass would be the same network and its "
                          "uncertainty zero.")
    return module


def _check_providers(strategy: Strategy, compute: Mapping[str, object], embed: object) -> None:
    if embed is not None and not callable(embed):
        raise ConfigError(f"`embed` must be a callable embed(X) -> array, got {type(embed).__name__}.")
    for name, function in compute.items():
        if name not in INPUTS or name in BUILT_IN_INPUTS:
            external = sorted(set(INPUTS) - set(BUILT_IN_INPUTS))
            raise ConfigError(f"`compute` key '{name}' must be one of {', '.join(external)} (the adapter "
                              "computes the others itself).")
        if not callable(function):
            raise ConfigError(f"`compute['{name}']` must be a callable f(X_pool) -> array.")
    missing = [need for need in strategy.needs if need not in BUILT_IN_INPUTS and need not in compute]
    if missing:
        raise ConfigError(f"strategy '{strategy.name}' needs {', '.join(missing)}, which a modAL estimator cannot "
                          f"provide; pass compute={{'{missing[0]}': f(X_pool) -> array}} or use one of "
                          f"{', '.join(modal_strategies())}.")


def _check_options(strategy: Strategy, options: Mapping[str, object]) -> dict[str, object]:
    unknown = sorted(set(options) - set(strategy.options))
    if unknown:
        known = ", ".join(sorted(strategy.options)) or "none"
        raise ConfigError(f"strategy '{strategy.name}' has no option '{unknown[0]}'; its options are: {known}.")
    return dict(options)


def _check_outputs(outputs: object) -> None:
    if outputs not in MODULE_OUTPUTS:
        raise ConfigError(f"`outputs`={outputs!r} must be one of {', '.join(MODULE_OUTPUTS)}.")


def _generator(rng: object) -> np.random.Generator:
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    return np.random.default_rng(check_int(rng, "rng", minimum=0))


def patch_modal() -> bool:
    """Let modAL's learners validate their data under scikit-learn versions without ``force_all_finite``.

    modAL 0.4.2.1 calls ``check_X_y(..., force_all_finite=...)`` in ``ActiveLearner.fit`` and ``teach``;
    scikit-learn 1.8 removed that argument (renamed ``ensure_all_finite`` in 1.6). This replaces the
    ``check_X_y`` that ``modAL.models.learners`` imported with a wrapper that renames the argument and
    keeps its value, so non-finite data is still refused exactly as modAL asked. Nothing else in modAL or
    scikit-learn is touched. It runs when this module is imported; calling it again does nothing.

    Returns
    -------
    bool
        True when modAL's learners now use the translating check (installed by this call or an earlier
        one); False when no change is needed: modAL is not installed, or scikit-learn still accepts
        ``force_all_finite``.
    """
    try:
        from modAL.models import learners
    except ImportError:
        return False
    check = learners.check_X_y
    if getattr(check, "_activelab_translates_force_all_finite", False):
        return True
    if "force_all_finite" in inspect.signature(check).parameters:
        return False
    learners.check_X_y = _renaming_force_all_finite(check)
    return True


def _renaming_force_all_finite(check_X_y: Callable[..., object]) -> Callable[..., object]:
    def check_X_y_for_modal(*args: object, **kwargs: object) -> object:
        if "force_all_finite" in kwargs:
            kwargs["ensure_all_finite"] = kwargs.pop("force_all_finite")
        return check_X_y(*args, **kwargs)

    check_X_y_for_modal._activelab_translates_force_all_finite = True
    return check_X_y_for_modal


patch_modal()

__all__ = ["BUILT_IN_INPUTS", "MODULE_OUTPUTS", "ModalQueryStrategy", "mc_probabilities", "modal_strategies",
           "patch_modal", "query_strategy"]
