"""One RunConfig dataclass describes an experiment; CLI flags map onto its fields one to one."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from activelab.errors import ConfigError, StateError
from activelab.validation import check_float, check_int

#: The file in a run directory that holds the run's configuration.
CONFIG_FILE = "config.json"

#: How the initial labelled set is drawn: uniformly from the pool, or the same number from every class.
INITIAL_CHOICES = ("random", "balanced")
#: What early stopping and the choice of the best epoch may watch, and which way is better.
MONITORS = {"val_acc": "max", "val_loss": "min"}

#: Experiment trackers (Lightning loggers, see activelab.trackers), in the order they are listed to a user.
TRACKERS = ("csv", "tensorboard", "mlflow", "wandb")

#: What a round trains (see activelab.models.modes), with the description the command line shows.
TRAIN_MODES = {
    "scratch": "train every layer from a random initialisation",
    "finetune": "train every layer, starting from pretrained weights (--pretrained or --weights)",
    "head": "train only the head on a frozen pretrained trunk (--pretrained or --weights)",
}

#: Fields that may change between a run and its resumption: they do not change the results of the rounds
#: already run (``al_iter`` may grow to extend a finished run by more rounds).
RESUMABLE_CHANGES = frozenset({"num_workers", "progress", "out", "run_name", "al_iter", "trackers", "executor",
                               "ray_address", "ray_workers"})
#: Where the pool is scored: in this process, or on a Ray cluster (activelab.pool_scoring).
EXECUTORS = ("local", "ray")

#: The study's modAL query-strategy names (``--al_query_strategy``) and the strategy each one is here.
#: ``max_entropy`` is the maximum predictive entropy of the MC-dropout average (Gal et al. 2017).
STUDY_QUERY_STRATEGIES = {
    "uncertainty_sampling": "least_confidence",
    "margin_sampling": "margin",
    "entropy_sampling": "entropy",
    "max_entropy": "mc_entropy",
    "bald": "bald",
    "random": "random",
    "outlier": "outlier",
    "cluster_outlier_combined": "cluster_outlier_combined",
}

#: The strategy input that holds the MC-dropout passes (computed ``mc_samples`` times).
MC_INPUT = "probs_T_N_C"

#: Dataset options that also have their own flag (``--binary`` is ``--source-option binary=true``).
FLAG_SOURCE_OPTIONS = ("binary", "rgb", "bands")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one active-learning run.

    Sizes: ``n_train_images`` labels to start with, ``al_samples_per_iter`` labels per acquisition,
    ``al_iter`` acquisitions (so ``al_iter + 1`` trainings: the last batch is trained on too).
    Splits: ``n_val`` validation items (early stopping only), ``n_test`` test items (reporting only;
    None = the source's whole official test split, or 20 %), ``pool_size`` (None = every remaining item),
    ``pool_subset`` (score only a random subset of this many pool items each round, drawn afresh every
    round, as the code of Gal et al. 2017 did with 2,000 and baal's ``max_sample`` does; None = score the
    whole pool),
    ``n_holdout`` items for helper heads, reserved whatever the strategy so that runs with one seed share
    their splits (None = 1000, at most a tenth of the labelled items left).
    Options: ``source_kwargs`` are extra keyword options of the dataset source (``--source-option``, values
    as given; the source parses them), ``strategy_kwargs`` extra keyword options of the strategy
    (``--strategy-option``; converted to the type of the strategy's default by :meth:`strategy_options`).
    ``augment`` turns on random flips and crops of the training images.
    Training: at most ``max_epochs`` epochs and at least ``min_steps`` optimiser steps per round (a small
    labelled set is repeated within an epoch); early stopping with ``patience`` and the choice of the best
    epoch watch ``monitor`` (``val_acc`` or ``val_loss``). The defaults (300 steps, the validation loss) come
    from the measurement in docs/small-budget.md. ``initial`` is ``random`` or ``balanced`` (the same
    number of initial labels from every class, as Gal et al. 2017 start from). ``train_mode`` is
    ``scratch`` (every layer, from a fresh initialisation), ``finetune`` (every layer, from pretrained
    weights) or ``head`` (only the head, on a frozen pretrained trunk); ``auto_lr`` runs Lightning's
    learning-rate finder before each round's training and records the rate it chose.
    """

    sampling_method: str = "margin"
    data_class: str = "fashion-mnist"
    model_class: str = "cnn"
    n_train_images: int = 100
    initial: str = "random"
    al_samples_per_iter: int = 100
    al_iter: int = 5
    max_epochs: int = 20
    min_steps: int = 300
    patience: int = 5
    monitor: str = "val_loss"
    lr: float = 1e-3
    batch_size: int = 64
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0
    pretrained: bool = False
    weights: str | None = None
    warm_start: bool = False
    train_mode: str = "scratch"
    auto_lr: bool = False
    augment: bool = False
    mc_samples: int = 10
    n_val: int = 1000
    n_test: int | None = None
    pool_size: int | None = None
    pool_subset: int | None = None
    n_holdout: int | None = None
    data_dir: str | None = None
    binary: bool = False
    rgb: bool = False
    bands: str | None = None
    source_kwargs: dict = field(default_factory=dict)
    strategy_kwargs: dict = field(default_factory=dict)
    trackers: list = field(default_factory=lambda: ["csv"])
    out: str = "results"
    run_name: str | None = None
    progress: bool = True
    executor: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None

    def validated(self) -> "RunConfig":
        """Check numbers, names, options and devices; return the config with strategy options typed.

        Every failure is a :class:`~activelab.errors.ConfigError` of one sentence. The returned copy has
        ``strategy_kwargs`` converted as :meth:`strategy_options` does, so a run started from the command
        line (strings) and one started from Python (numbers) save the same configuration.
        """
        check_int(self.n_train_images, "n_train_images", minimum=0)
        check_int(self.al_samples_per_iter, "al_samples_per_iter", minimum=1)
        check_int(self.al_iter, "al_iter", minimum=0)
        check_int(self.max_epochs, "max_epochs", minimum=1)
        check_int(self.patience, "patience", minimum=1)
        check_int(self.min_steps, "min_steps", minimum=0)
        check_choice(self.monitor, "monitor", MONITORS)
        check_choice(self.initial, "initial", INITIAL_CHOICES)
        check_float(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.num_workers, "num_workers", minimum=0)
        check_int(self.gpus, "gpus", minimum=0)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.mc_samples, "mc_samples", minimum=1)
        check_int(self.n_val, "n_val", minimum=0)
        for name in ("n_test", "pool_size", "pool_subset"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        if self.n_holdout is not None:
            check_int(self.n_holdout, "n_holdout", minimum=0)
        strategy = lookup_strategy(self.sampling_method)
        lookup_source(self.data_class)
        check_model_name(self.model_class)
        check_train_mode(self.train_mode, pretrained=self.pretrained, weights=self.weights)
        if MC_INPUT in strategy.needs and self.mc_samples < 2:
            raise ConfigError(f"{strategy.name} needs at least 2 MC samples (--mc-samples), got {self.mc_samples}.")
        check_gpus(self.gpus)
        check_trackers(self.trackers)
        check_choice(self.executor, "executor", EXECUTORS)
        if self.ray_workers is not None:
            check_int(self.ray_workers, "ray_workers", minimum=1)
        if self.executor != "ray" and (self.ray_address is not None or self.ray_workers is not None):
            raise ConfigError("a Ray address or worker count needs the Ray executor (--executor ray).")
        self.source_options()
        return dataclasses.replace(self, strategy_kwargs=self.strategy_options())

    @property
    def name(self) -> str:
        """The run's name: ``run_name`` or ``<dataset>-<strategy>-<model>-seed<seed>``."""
        return self.run_name or f"{self.data_class}-{self.sampling_method}-{self.model_class}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        """Where the run's ledger, config and weights live."""
        return Path(self.out) / self.name

    def source_options(self) -> dict:
        """The keyword options for ``source.load(data_dir, **options)``.

        ``--binary``/``--rgb``/``--bands`` when set, merged with ``source_kwargs``; raises ConfigError when
        the source does not declare one of them (its ``Source.options``) or one is given both ways.
        """
        flags = {key: getattr(self, key) for key in FLAG_SOURCE_OPTIONS}
        options = {key: value for key, value in flags.items() if value}
        extra = _option_mapping(self.source_kwargs, "--source-option")
        twice = sorted(set(options) & set(extra))
        if twice:
            raise ConfigError(f"the dataset option {twice[0]} is given twice, as --{twice[0]} and as "
                              f"--source-option {twice[0]}=...; give it once.")
        options.update(extra)
        source = lookup_source(self.data_class)
        for key in sorted(options):
            if key not in source.options:
                how = f"--{key}" if key in flags and key not in extra else f"--source-option {key}=..."
                accepted = (f"its options are {', '.join(source.options)}" if source.options
                            else "it takes no options")
                close = closest(key, source.options)
                hint = f"; did you mean {close}?" if close else ""
                raise ConfigError(f"the {source.name} dataset has no option {key} ({how}{hint}); {accepted}.")
        return options

    def strategy_options(self) -> dict:
        """The keyword options for ``strategy(n, rng=..., **inputs, **options)``.

        ``strategy_kwargs`` checked against the options the strategy declares (``Strategy.options``) and
        converted to the type of each declared default (int, float or bool; text values such as "0.5" are
        parsed); raises ConfigError for an unknown option or a value that does not convert.
        """
        strategy = lookup_strategy(self.sampling_method)
        options = {}
        for key, value in _option_mapping(self.strategy_kwargs, "--strategy-option").items():
            if key not in strategy.options:
                accepted = (f"its options are {', '.join(sorted(strategy.options))}" if strategy.options
                            else "it takes no options")
                raise ConfigError(f"the strategy {strategy.name} has no option {key}"
                                  f"{_maybe(key, strategy.options)}; {accepted}.")
            options[key] = _convert_option(strategy.name, key, value, strategy.options[key])
        return options

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> "RunConfig":
        """Rebuild from :meth:`to_dict`, ignoring unknown keys from newer versions."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in names})

    @classmethod
    def load_saved(cls, run_dir: Path) -> "RunConfig":
        """The configuration saved in ``run_dir``, placed at ``run_dir`` wherever the folder now lives."""
        run_dir = Path(run_dir)
        saved = run_dir / CONFIG_FILE
        if not saved.is_file():
            raise StateError(f"{run_dir} is not an activelab run directory (no {CONFIG_FILE}).")
        try:
            config = cls.from_dict(json.loads(saved.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise StateError(f"{saved} is not a readable run configuration ({error}).") from None
        return dataclasses.replace(config, out=str(run_dir.parent), run_name=run_dir.name)

    def differences(self, other: "RunConfig") -> list[str]:
        """Names of fields that differ and would change results (used to refuse a mismatched resume).

        Compare validated configs: :meth:`validated` gives strategy options their declared types.
        """
        return [field.name for field in dataclasses.fields(self)
                if field.name not in RESUMABLE_CHANGES and getattr(self, field.name) != getattr(other, field.name)]


# ------------------------------------------------------------------------------------------ names


def check_trackers(names: object) -> None:
    """Refuse anything but a list of known tracker names (their packages are checked when they open)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ConfigError(f"`trackers`={names!r} must be a list of names from {', '.join(TRACKERS)}.")
    for name in names:
        if str(name).lower() not in TRACKERS:
            raise ConfigError(unknown_name("tracker", name, TRACKERS, f"choose from {', '.join(TRACKERS)}"))


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` when it is one of ``choices``; ConfigError naming them otherwise."""
    if value not in choices:
        raise ConfigError(f"`{name}`={value!r} must be one of {', '.join(choices)}.")
    return value


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name`` (difflib), or None when none is close enough to be a typo."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.7)
    return close[0] if close else None


def unknown_name(what: str, name: str, choices: Iterable[str], otherwise: str) -> str:
    """``unknown <what> '<name>'; did you mean X?``, or ``...; <otherwise>.`` when no choice is close."""
    close = closest(name, choices)
    return f"unknown {what} '{name}'; " + (f"did you mean {close}?" if close else f"{otherwise}.")


def _maybe(name: str, choices: Iterable[str]) -> str:
    close = closest(name, choices)
    return f" (did you mean {close}?)" if close else ""


def lookup_strategy(name: str):
    """The registered strategy ``name`` (hyphens or underscores); ConfigError naming the closest if unknown."""
    from activelab.strategies import registry

    strategies = registry()
    key = str(name).replace("-", "_")
    if key in strategies:
        return strategies[key]
    study = STUDY_QUERY_STRATEGIES.get(key.lower())
    if study is not None:
        raise ConfigError(f"unknown sampling method '{name}'; the study's {key.lower()} is --sampling-method {study} "
                          f"(or --al-query-strategy {key.lower()}).")
    raise ConfigError(unknown_name("sampling method", name, strategies, "see `activelab strategies` for the names"))


def lookup_source(name: str):
    """The registered dataset source ``name``; ConfigError with the closest name (or the list) if unknown."""
    from activelab.data.sources import sources

    known = sources()
    key = str(name).replace("_", "-").lower()
    if key in known:
        return known[key]
    raise ConfigError(unknown_name("dataset", name, known, f"choose one of: {', '.join(sorted(known))}"))


def check_train_mode(mode: str, *, pretrained: bool, weights: str | None) -> None:
    """Refuse an unknown training mode, or one that needs pretrained weights without them."""
    from activelab.models.modes import check_train_mode as check

    check(mode, pretrained=pretrained, weights=weights)


#: Model names of this form stand for a network a Python caller passes to activelab.Run itself.
PYTHON_MODEL_PREFIX = "python:"


def check_model_name(name: str) -> None:
    """Raise the models module's ConfigError (with the closest name) when ``name`` is not a known model."""
    if str(name).startswith(PYTHON_MODEL_PREFIX):
        return
    from activelab.models import check_model

    check_model(name)


def check_gpus(gpus: int) -> None:
    """Refuse ``gpus`` > 0 when torch sees fewer GPUs (training would silently fall back to the CPU)."""
    if gpus == 0:
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(f"--gpus {gpus} asks for a GPU but torch finds none on this machine; "
                          "use --gpus 0 to train on the CPU.")
    if gpus > available:
        raise ConfigError(f"--gpus {gpus} asks for {gpus} GPUs but torch finds {available}; use --gpus {available}.")


# ------------------------------------------------------------------------------------------ options


def _option_mapping(options: object, flag: str) -> dict:
    """``options`` as a dict after checking it maps non-empty names to JSON values."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"the {flag} options must be a mapping of name to value, got {type(options).__name__}.")
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"the {flag} option name {key!r} must be a non-empty string.")
        if value is not None and not isinstance(value, (str, bool, numbers.Real)):
            raise ConfigError(f"the {flag} option {key} must be text, a number or a boolean, "
                              f"got {type(value).__name__}.")
    return dict(options)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert_option(strategy: str, key: str, value: object, default: object) -> object:
    """``value`` converted to the type of ``default`` (bool, int, float); other defaults take it as it is."""
    text = value.strip().lower() if isinstance(value, str) else None
    if isinstance(default, bool):
        if isinstance(value, bool) or text in _TRUE | _FALSE:
            return value if isinstance(value, bool) else text in _TRUE
        kind = "true or false"
    elif isinstance(default, numbers.Integral):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if text is not None and text.lstrip("+-").isdigit():
            return int(text)
        kind = "a whole number"
    elif isinstance(default, numbers.Real):
        number = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
        elif text is not None:
            try:
                number = float(text)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        kind = "a finite number"
    else:
        return value
    raise ConfigError(f"the strategy option {key}={value!r} of {strategy} must be {kind} "
                      f"(its default is {default!r}).")
