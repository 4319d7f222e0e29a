"""The ``activelab`` command line.

``activelab run`` takes the study's flags (hyphenated primary spellings; the seed's underscored ones
work too but are not listed in ``--help``). Every error a user can cause prints one sentence on stderr
and exits with code 2; results go to stdout, progress lines (the ``activelab`` logger) to stderr.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.metadata
import io
import json
import logging
import os
import shutil
import sys
import textwrap
from pathlib import Path

from activelab.config import (INITIAL_CHOICES, MONITORS, STUDY_QUERY_STRATEGIES, TRACKERS, TRAIN_MODES, RunConfig,
                              closest, unknown_name)
from activelab.errors import ConfigError, StateError, UserError

DEMO = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=100, al_samples_per_iter=100,
            al_iter=4, max_epochs=10, patience=3, n_val=500, n_test=2000, pool_size=10000, seed=0)

#: Width of listings and help (fits a 100-column terminal).
WIDTH = 100
#: The results store's file name in an ``--out`` folder (as written by :mod:`activelab.loop`).
STORE_NAME = "activelab.sqlite"
#: Exit code after the reader of stdout went away (``activelab runs | head``), as a shell reports SIGPIPE.
BROKEN_PIPE_EXIT = 141

FAMILIES = ("baseline", "uncertainty", "bayesian", "batch", "diversity", "hybrid", "auxiliary")


# ------------------------------------------------------------------------------------------ parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default, except where it has none or the help text already says it."""

    def __init__(self, prog: str) -> None:
        width = min(shutil.get_terminal_size((WIDTH, 24)).columns, WIDTH)
        super().__init__(prog, max_help_position=34, width=width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
                or "default" in text):
            return text
        if action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one sentence and exit code 2, pointing at the right ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, _Parser] = {}
        self.subcommand_dest: str | None = None

    def error(self, message: str) -> None:
        raise ConfigError(f"{message} (see `{self.prog} --help`).")

    def add_subcommands(self, dest: str, **kwargs) -> argparse._SubParsersAction:
        self.subcommand_dest = dest
        return self.add_subparsers(dest=dest, parser_class=_Parser, **kwargs)

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.innermost(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def innermost(self, parsed: argparse.Namespace) -> "_Parser":
        """The (sub)command parser that ``parsed`` came from, so errors point at its own help."""
        parser = self
        while parser.subcommand_dest and getattr(parsed, parser.subcommand_dest, None) in parser.subcommands:
            parser = parser.subcommands[getattr(parsed, parser.subcommand_dest)]
        return parser


def _subcommand(parent: _Parser, commands: argparse._SubParsersAction, name: str, text: str, **kwargs) -> _Parser:
    parser = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", **kwargs)
    parent.subcommands[name] = parser
    return parser


def _switch(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not separator or not key or not key.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key, value.strip()


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--name``; the seed's spelling ``--na_me`` is accepted too, hidden from the help."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, **kwargs)
    if "-" in name:
        alias = {key: value for key, value in kwargs.items() if key not in ("help", "default", "metavar")}
        parser.add_argument(f"--{dest}", dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **alias)


def _switch_flag(parser: argparse.ArgumentParser, name: str, text: str, **kwargs) -> None:
    _flag(parser, name, type=_switch, nargs="?", const=True, default=False, metavar="BOOL", help=text, **kwargs)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    study_names = ", ".join(STUDY_QUERY_STRATEGIES)
    _flag(parser, "sampling-method", metavar="NAME", default=None,
          help=f"strategy, see `activelab strategies` (default: {defaults.sampling_method})")
    _flag(parser, "al-query-strategy", metavar="NAME", default=None,
          help=f"the study's modAL strategy name ({study_names}), mapped to a strategy; or any strategy name")
    _flag(parser, "data-class", metavar="NAME", default=defaults.data_class, help="dataset, see `activelab datasets`")
    _flag(parser, "model-class", metavar="NAME", default=defaults.model_class,
          help="cnn, resnet18, resnet50, torchvision:NAME (e.g. torchvision:resnet34) or timm:NAME")
    _flag(parser, "train-mode", choices=list(TRAIN_MODES), default=defaults.train_mode,
          help="; ".join(f"{mode}: {text}" for mode, text in TRAIN_MODES.items()))
    _switch_flag(parser, "auto-lr", "pick each round's learning rate with Lightning's learning-rate finder")
    _flag(parser, "n-train-images", metavar="N", type=int, default=defaults.n_train_images,
          help="labelled images to start with")
    _flag(parser, "initial", choices=INITIAL_CHOICES, default=defaults.initial,
          help="initial labels drawn at random, or the same number from every class")
    _flag(parser, "al-samples-per-iter", metavar="N", type=int, default=defaults.al_samples_per_iter,
          help="images labelled per round")
    _flag(parser, "al-iter", metavar="N", type=int, default=defaults.al_iter,
          help="acquisition rounds (the model is trained N + 1 times)")
    _flag(parser, "max-epochs", metavar="N", type=int, default=defaults.max_epochs,
          help="most training epochs per round")
    _flag(parser, "min-steps", metavar="N", type=int, default=defaults.min_steps,
          help="fewest optimiser steps per round: a small labelled set is repeated within an epoch")
    _flag(parser, "patience", metavar="N", type=int, default=defaults.patience,
          help="epochs without a better --monitor value before training stops")
    _flag(parser, "monitor", choices=MONITORS, default=defaults.monitor,
          help="what early stopping and the choice of the best epoch watch")
    _flag(parser, "lr", metavar="RATE", type=float, default=defaults.lr, help="learning rate of Adam")
    _flag(parser, "batch-size", metavar="N", type=int, default=defaults.batch_size, help="training batch size")
    _flag(parser, "num-workers", metavar="N", type=int, default=defaults.num_workers,
          help="data-loading worker processes (0 = load in the main process)")
    _flag(parser, "gpus", metavar="N", type=int, default=defaults.gpus, help="GPUs to train on (0 = CPU)")
    _flag(parser, "seed", metavar="N", type=int, default=defaults.seed,
          help="seed of the splits, the initial labels, training and selection")
    _flag(parser, "mc-samples", metavar="T", type=int, default=defaults.mc_samples,
          help="MC-dropout passes for the bayesian and batch strategies (at least 2)")
    _flag(parser, "n-val", metavar="N", type=int, default=defaults.n_val, help="validation items (early stopping only)")
    _flag(parser, "n-test", metavar="N", type=int, default=None,
          help="test items (default: the official test split, else 20%%)")
    _flag(parser, "pool-size", metavar="N", type=int, default=None,
          help="subsample the unlabelled pool to N items (default: every remaining item)")
    _flag(parser, "n-holdout", metavar="N", type=int, default=None,
          help="holdout items for helper heads (ATL), reserved for every strategy so that splits are paired "
               "(default: 1000, at most a tenth of the labelled items left)")
    _flag(parser, "data-dir", metavar="DIR", default=None, help="folder holding the dataset files")
    _flag(parser, "weights", metavar="FILE", default=None, help="pretrained weights file for --pretrained")
    _switch_flag(parser, "pretrained", "start from ImageNet weights")
    _switch_flag(parser, "warm-start", "fine-tune the previous round's model instead of training from scratch")
    _switch_flag(parser, "augment", "random flips and crops of training images, off by default as in the study")
    _switch_flag(parser, "binary", "DroughtWatch: forage quality 0 vs 1-3")
    _switch_flag(parser, "rgb", "DroughtWatch: bands B4,B3,B2")
    _flag(parser, "bands", metavar="LIST", default=None, help="DroughtWatch bands, e.g. B2,B3,B4,B8")
    _flag(parser, "source-option", metavar="KEY=VALUE", type=_key_value, action="append", default=None,
          help="a dataset option (see `activelab datasets`), e.g. size=64 or grayscale=true; repeatable")
    _flag(parser, "strategy-option", metavar="KEY=VALUE", type=_key_value, action="append", default=None,
          help="a strategy option (see `activelab strategies NAME`), e.g. beta=2; repeatable")
    _flag(parser, "logger", metavar="NAME", choices=TRACKERS[1:], action="append", default=None,
          help="also send training curves and round metrics to this tracker (csv in the run folder is always on; "
               "W&B writes offline without an API key); repeatable")
    _switch_flag(parser, "wandb", "the study's flag: the same as --logger wandb")
    parser.add_argument("--out", metavar="DIR", default=defaults.out,
                        help="results folder (the results store + one folder per run)")
    _flag(parser, "run-name", metavar="NAME", default=None,
          help="run folder name (default: <dataset>-<strategy>-<model>-seed<seed>)")
    parser.add_argument("--resume", metavar="DIR", default=None, help="continue the run in DIR with its saved settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines, results only")


def _version() -> str:
    try:
        return importlib.metadata.version("activelab")
    except importlib.metadata.PackageNotFoundError:
        from activelab import __version__

        return __version__


def build_parser() -> _Parser:
    parser = _Parser(prog="activelab", description="Active learning on images: train on a few labels, let the "
                     "model choose what a person labels next, and compare with labelling at random.")
    parser.add_argument("--version", action="version", version=f"activelab {_version()}")
    commands = parser.add_subcommands("command", title="commands", metavar="COMMAND")
    _add_run_flags(_subcommand(parser, commands, "run", "run or resume one active-learning experiment"))
    demo = _subcommand(parser, commands, "demo", "margin vs random on Fashion-MNIST, a few rounds")
    demo.add_argument("--out", metavar="DIR", default="results/demo", help="results folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or progress lines, results only")
    strategies = _subcommand(parser, commands, "strategies", "list the strategies, or describe one")
    strategies.add_argument("name", nargs="?", metavar="NAME", help="describe this strategy in full")
    strategies.add_argument("--verbose", "-v", action="store_true",
                            help="describe every strategy: inputs, options with defaults, reference")
    datasets = _subcommand(parser, commands, "datasets", "list the dataset sources and whether their files are here")
    datasets.add_argument("--data-dir", metavar="DIR", default=None, help="also look in this folder")
    _add_runs_parser(parser, commands)
    export = _subcommand(parser, commands, "export", "export every round of every run (or the pending selections)")
    export.add_argument("--out", metavar="DIR", default="results", help="results folder holding activelab.sqlite")
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="output format")
    export.add_argument("--to", metavar="FILE", default=None, help="file to write (default: standard output)")
    export.add_argument("--run", metavar="RUN", default=None, help="only this run")
    export.add_argument("--pending", action="store_true",
                        help="the pending items that need a person's label (rank, id, key, score and an empty "
                             "label column), to fill in and import with `activelab label`")
    label = _subcommand(parser, commands, "label", "add labels a person gave (CSV id,label) to a run's ledger")
    label.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    label.add_argument("--labels", metavar="FILE", required=True,
                       help="CSV with columns id,label (class name or index)")
    label.add_argument("--annotator", metavar="NAME", default=None,
                       help="who gave the labels, kept in the run's history (default: your user name)")
    fetch = _subcommand(parser, commands, "fetch", "make sure a downloadable dataset is on this machine")
    fetch.add_argument("dataset", choices=["fashion-mnist", "mnist"], help="the dataset")
    return parser


def _add_runs_parser(parser: _Parser, commands: argparse._SubParsersAction) -> None:
    """``runs [list]`` and ``runs show RUN``; ``--out`` is accepted before or after the action and the run."""
    runs = _subcommand(parser, commands, "runs", "list the runs in a results folder, or show one")
    runs.add_argument("--out", metavar="DIR", default="results", help="results folder holding activelab.sqlite")
    actions = runs.add_subcommands("action", title="actions", metavar="ACTION")
    listing = _subcommand(runs, actions, "list", "list the runs (the default)")
    show = _subcommand(runs, actions, "show", "one run: settings, environment, rounds and pending selection")
    show.add_argument("run_id", metavar="RUN", help="the run's name (see `activelab runs`)")
    show.add_argument("--json", action="store_true", help="print everything as JSON")
    for sub in (listing, show):
        sub.add_argument("--out", metavar="DIR", default=argparse.SUPPRESS,
                         help="results folder holding activelab.sqlite (default: results)")


# ------------------------------------------------------------------------------------------ run


def _options(pairs: list[tuple[str, str]] | None, flag: str) -> dict:
    options: dict[str, str] = {}
    for key, value in pairs or ():
        if options.get(key, value) != value:
            raise ConfigError(f"{flag} {key} is given twice ({options[key]} and {value}); give it once.")
        options[key] = value
    return options


def _sampling_method(args: argparse.Namespace) -> str:
    """``--sampling-method``, or the strategy the study's ``--al-query-strategy`` name stands for."""
    chosen, study = args.sampling_method, args.al_query_strategy
    if study is None:
        return chosen if chosen is not None else RunConfig().sampling_method
    from activelab.strategies import registry

    key = study.replace("-", "_").lower()
    mapped = STUDY_QUERY_STRATEGIES.get(key) or (key if key in registry() else None)
    if mapped is None:
        raise ConfigError(unknown_name("--al-query-strategy", study, [*STUDY_QUERY_STRATEGIES, *registry()],
                                       f"use one of the study's names ({', '.join(STUDY_QUERY_STRATEGIES)}) "
                                       "or a name from `activelab strategies`"))
    if chosen is not None and chosen.replace("-", "_") != mapped:
        raise ConfigError(f"--sampling-method {chosen} and --al-query-strategy {study} (= {mapped}) ask for "
                          "different strategies; give only one of them.")
    return mapped


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Map parsed ``run`` flags onto a RunConfig (``--resume DIR`` reads the saved config instead)."""
    if args.resume:
        return dataclasses.replace(RunConfig.load_saved(Path(args.resume)), progress=not args.quiet,
                                   num_workers=args.num_workers)
    names = {field.name for field in dataclasses.fields(RunConfig)}
    values = {key: value for key, value in vars(args).items() if key in names}
    values["sampling_method"] = _sampling_method(args)
    values["source_kwargs"] = _options(args.source_option, "--source-option")
    values["strategy_kwargs"] = _options(args.strategy_option, "--strategy-option")
    values["trackers"] = ["csv", *dict.fromkeys([*(args.logger or []), *(["wandb"] if args.wandb else [])])]
    return RunConfig(**values, progress=not args.quiet)


ROW = "{round:>5} {n_labelled:>7} {accuracy:>9} {f1:>9} {val:>8} {epochs:>6} {seconds:>8}"


def print_header() -> None:
    print(ROW.format(round="round", n_labelled="labels", accuracy="test acc", f1="macro-F1", val="val acc",
                     epochs="epochs", seconds="seconds"), flush=True)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_round(record) -> None:
    """One table row for a round: the loop's record (a dataclass) or a results-store row (a dict)."""
    if dataclasses.is_dataclass(record):
        record = dataclasses.asdict(record)
    seconds = sum(record.get(key) or 0 for key in ("seconds_train", "seconds_evaluate"))
    epochs = record.get("epochs")
    print(ROW.format(round=record["round"], n_labelled=record["n_labelled"],
                     accuracy=_percent(record.get("test_accuracy")), f1=_percent(record.get("test_macro_f1")),
                     val=_percent(record.get("val_accuracy")), epochs="-" if epochs is None else epochs,
                     seconds=f"{seconds:.1f}"), flush=True)


def _run(config: RunConfig) -> str | None:
    """Run ``config``: the title and table header once inputs are checked, then a row per round.

    Returns the sentence saying how to continue when the run stopped to wait for a person's labels.
    """
    from activelab.loop import run_experiment, waiting_for_labels

    def on_start() -> None:
        print(f"run {config.name}: {config.sampling_method} on {config.data_class} with "
              f"{config.model_class}, seed {config.seed}", flush=True)
        print_header()

    state = run_experiment(config, on_round=print_round, on_start=on_start)
    return waiting_for_labels(state, config.run_dir)


def command_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    waiting = _run(config)
    print(f"results: {config.run_dir} (store: {Path(config.out) / STORE_NAME})")
    if waiting:
        print(waiting)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    strategies = ("margin", "random")
    for strategy in strategies:
        _run(RunConfig(**DEMO, sampling_method=strategy, out=args.out, run_name=f"demo-{strategy}",
                       progress=not args.quiet))
        print()
    store = _store(args.out)
    print("final test accuracy by labels:")
    for strategy in strategies:
        rounds = store.rounds(f"demo-{strategy}")
        curve = ", ".join(f"{row['n_labelled']}: {100 * row['test_accuracy']:.1f}%" for row in rounds)
        print(f"  {strategy:>7}  {curve}")
    print(f"results: {args.out} (store: {Path(args.out) / STORE_NAME}); one seed only, see "
          "`activelab export` for the rounds")
    return 0


# ------------------------------------------------------------------------------------------ listings


def _wrapped(first: str, text: str, indent: int) -> str:
    """``first`` followed by ``text`` wrapped to :data:`WIDTH` columns, continuation lines indented."""
    return textwrap.fill(text, width=WIDTH, initial_indent=first, subsequent_indent=" " * indent,
                         break_on_hyphens=False)


def _describe_strategy(strategy) -> str:
    from activelab.strategies import INPUTS

    lines = [f"{strategy.name} ({strategy.family})", _wrapped("  ", strategy.description, 2)]
    for index, need in enumerate(strategy.needs or ("",)):
        label = "  needs:     " if index == 0 else " " * 13
        text = f"{need}: {INPUTS.get(need, '')}" if need else "only the pool size"
        lines.append(_wrapped(label, text, 13))
    if strategy.options:
        options = ", ".join(f"{key}={value!r}" for key, value in strategy.options.items())
        lines.append(_wrapped("  options:   ", f"{options} (set with --strategy-option KEY=VALUE)", 13))
    else:
        lines.append("  options:   none")
    lines.append(_wrapped("  reference: ", strategy.reference, 13))
    return "\n".join(lines)


def command_strategies(args: argparse.Namespace) -> int:
    from activelab.config import lookup_strategy
    from activelab.strategies import registry

    if args.name:
        print(_describe_strategy(lookup_strategy(args.name)))
        return 0
    strategies = registry()
    if args.verbose:
        print("\n\n".join(_describe_strategy(strategies[name]) for name in sorted(strategies)))
        return 0
    families = [*FAMILIES, *sorted({s.family for s in strategies.values()} - set(FAMILIES))]
    column = 28
    for family in families:
        members = sorted(name for name, strategy in strategies.items() if strategy.family == family)
        if members:
            print(family)
        for name in members:
            if len(name) > column - 4:
                print(f"  {name}")
                print(_wrapped(" " * column, strategies[name].description, column))
            else:
                print(_wrapped(f"  {name:<{column - 2}}", strategies[name].description, column))
    print(f"\n{len(strategies)} strategies; `activelab strategies NAME` (or --verbose) shows the inputs, "
          "options and reference.")
    return 0


def command_datasets(args: argparse.Namespace) -> int:
    from activelab.data.sources import sources

    data_dir = Path(args.data_dir) if args.data_dir else None
    for name, source in sorted(sources().items()):
        print(_wrapped(f"{name:<15}", source.description, 15))
        classes = f"{source.classes} classes" if source.classes else "any number of classes"
        images = "any number of images" if source.size == "any" else f"{source.size} images"
        location = source.locate(data_dir)
        if location:
            where = f"present: {location}"
        elif not source.classes:
            where = "your own files: give --data-dir"
        else:
            where = "files not found"
        options = f"; options: {', '.join(source.options)}" if source.options else ""
        print(_wrapped(" " * 15, f"{classes}, {images}; {where}{options}", 15))
    print("\nSet a dataset's options with `activelab run --source-option KEY=VALUE` (repeatable).")
    return 0


# ------------------------------------------------------------------------------------------ results


def _store(out: str):
    """The results store in the folder ``out``; ConfigError when there is none (nothing is created)."""
    from activelab.store import Store

    path = Path(out) / STORE_NAME
    if not path.is_file():
        raise ConfigError(f"there is no results store in {out} (no {STORE_NAME}); give the --out folder "
                          "that `activelab run` wrote to.")
    return Store(path)


def _run_dir(run: dict, out: str) -> Path | None:
    """The run's directory: beside the store, else where it was recorded; None when neither exists."""
    for candidate in (Path(out) / run["run_id"], Path(run["run_dir"])):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def _pending(run: dict, out: str) -> tuple[list[dict], str | None]:
    """The run's selection waiting for labels, one row per item, and why keys are missing (or None).

    Each row: run_id, round, strategy, rank, id, key (the dataset's name for the item, such as its file),
    score, needs_label (True when neither the dataset nor a person has labelled the item; None when the
    dataset cannot be read) and an empty label column for a person to fill in.
    """
    from activelab.data.state import LabelState

    run_dir = _run_dir(run, out)
    if run_dir is None:
        return [], None
    state = LabelState.load(run_dir / "state.json")
    if not state.pending:
        return [], None
    ids = [int(item) for item in state.pending.get("ids", [])]
    scores = list(state.pending.get("scores") or [None] * len(ids))
    keys, needs, note = [None] * len(ids), [None] * len(ids), None
    try:
        dataset = _dataset_of(run_dir)
    except UserError as error:
        note = f"keys unavailable: {error}"
    else:
        from activelab.data.base import UNLABELLED

        keys = [dataset.key(item) for item in ids]
        needs = [bool(dataset.labels[item] == UNLABELLED) for item in ids]
    rows = [{"run_id": run["run_id"], "round": state.pending.get("round"), "strategy": state.pending.get("strategy"),
             "rank": rank, "id": item, "key": key, "score": score, "needs_label": need, "label": ""}
            for rank, (item, key, score, need) in enumerate(zip(ids, keys, scores, needs))]
    return rows, note


def _dataset_of(run_dir: Path):
    """The dataset of the run in ``run_dir``, loaded as the run loads it (never downloading)."""
    from activelab.data.sources import get_source

    config = RunConfig.load_saved(run_dir)
    source = get_source(config.data_class)
    options = config.source_options()
    if "download_missing" in source.options:
        options.setdefault("download_missing", False)
    return source.load(Path(config.data_dir) if config.data_dir else None, **options)


def command_runs(args: argparse.Namespace) -> int:
    if args.action == "show":
        return _show_run(args)
    store = _store(args.out)
    rows = store.runs()
    if not rows:
        print(f"no runs in {store.path}")
        return 0
    width = max(24, *(len(row["run_id"]) for row in rows))
    print(f"{'run':<{width}} {'status':<9} {'rounds':>6} {'labels':>7} {'test acc':>9}")
    for row in rows:
        print(f"{row['run_id']:<{width}} {row['status']:<9} {row['rounds']:>6} {row['n_labelled'] or 0:>7} "
              f"{_percent(row['test_accuracy']):>9}")
    return 0


def _no_run(run_id: str, store) -> str:
    close = closest(run_id, [row["run_id"] for row in store.runs()])
    return f"no run '{run_id}' in {store.path}; " + (f"did you mean {close}?" if close else "see `activelab runs`.")


def _show_run(args: argparse.Namespace) -> int:
    store = _store(args.out)
    run = store.run(args.run_id)
    if run is None:
        raise ConfigError(_no_run(args.run_id, store))
    rounds = store.rounds(args.run_id)
    pending, note = _pending(run, args.out)
    if args.json:
        print(json.dumps({**run, "rounds": rounds, "pending": pending}, indent=1))
        return 0
    print(f"run {run['run_id']}: {run['status']}")
    print(f"  {run['strategy']} on {run['dataset']} with {run['model']}, seed {run['seed']}")
    print(f"  created {run['created']}" + (f", finished {run['finished']}" if run["finished"] else ""))
    print(_wrapped("  directory: ", str(run["run_dir"]), 13))
    settings = " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(run["config"].items()))
    print(_wrapped("  settings:  ", settings, 13))
    print(_wrapped("  machine:   ", _environment_text(run["environment"]), 13))
    print()
    if rounds:
        print_header()
        for record in rounds:
            print_round(record)
    else:
        print("no rounds evaluated yet")
    if pending:
        first = pending[0]
        print()
        print(_wrapped("", f"pending selection of round {first['round']} ({first['strategy']}, {len(pending)} items "
                       f"waiting; `activelab export --pending --run {run['run_id']}` writes those whose label is "
                       "needed as CSV):", 0))
        print(f"{'rank':>5} {'id':>8} {'score':>10} {'label':<8} key")
        marks = {True: "needed", False: "known", None: "?"}
        for row in pending:
            score = "-" if row["score"] is None else f"{row['score']:.4g}"
            key = "-" if row["key"] is None else row["key"]
            print(f"{row['rank']:>5} {row['id']:>8} {score:>10} {marks[row['needs_label']]:<8} {key}")
        if note:
            print(_wrapped("", note, 0))
    return 0


def _environment_text(environment: dict) -> str:
    """The recorded environment in one line: versions, commit, platform, threads, CUDA."""
    packages = environment.get("packages") or {}
    parts = [f"python {environment['python']}" if environment.get("python") else "",
             ", ".join(f"{name} {version}" for name, version in packages.items() if version),
             f"commit {environment['git_commit']}" if environment.get("git_commit") else "",
             str(environment.get("platform") or ""),
             f"{environment['torch_threads']} torch threads" if environment.get("torch_threads") else "",
             ("CUDA available" if environment["cuda_available"] else "no CUDA") if "cuda_available" in environment
             else ""]
    return "; ".join(part for part in parts if part) or "not recorded"


def _write_output(target: str | None, text: str, count: int, what: str) -> None:
    """Write ``text`` to the file ``target`` atomically (checked first), or to stdout when None."""
    if target is None:
        sys.stdout.write(text)
        return
    from activelab.io import atomic_write_bytes

    path = Path(target)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory.")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: the folder {path.parent} does not exist.")
    try:
        atomic_write_bytes(path, text.encode())
    except OSError as error:
        raise StateError(f"cannot write {path} ({error.strerror or error}).") from None
    print(f"wrote {count} {what} to {path}")


def _serialise(rows: list[dict], columns: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def command_export(args: argparse.Namespace) -> int:
    store = _store(args.out)
    runs = store.runs()
    if args.run is not None and args.run not in {row["run_id"] for row in runs}:
        raise ConfigError(_no_run(args.run, store))
    if args.pending:
        rows = []
        for run in runs:
            if args.run in (None, run["run_id"]):
                pending, note = _pending(store.run(run["run_id"]), args.out)
                if note is not None:
                    raise ConfigError(f"cannot tell which pending items of run {run['run_id']} need a label "
                                      f"({note.removeprefix('keys unavailable: ').rstrip('.')}).")
                rows += [{key: value for key, value in row.items() if key != "needs_label"}
                         for row in pending if row["needs_label"]]
        columns = ["run_id", "round", "strategy", "rank", "id", "key", "score", "label"]
        _write_output(args.to, _serialise(rows, columns, args.format), len(rows), "pending item(s)")
        return 0
    from activelab.store import export_rounds

    if args.run is None:
        text = export_rounds(store, args.format)
        count = len(store.rounds())
    else:
        rows = [row for row in json.loads(export_rounds(store, "json")) if row["run_id"] == args.run]
        columns = next(csv.reader(io.StringIO(export_rounds(store, "csv"))))
        text, count = _serialise(rows, columns, args.format), len(rows)
    _write_output(args.to, text, count, "round(s)")
    return 0


def command_label(args: argparse.Namespace) -> int:
    from activelab.labelling import import_labels

    count = import_labels(Path(args.run_dir), Path(args.labels), annotator=args.annotator)
    print(f"recorded {count} label(s) in {Path(args.run_dir) / 'state.json'}; continue with "
          f"`activelab run --resume {args.run_dir}`")
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    from activelab.data.sources import mnist_family

    spec = {"fashion-mnist": mnist_family.FASHION, "mnist": mnist_family.MNIST}[args.dataset]
    folder = mnist_family.locate(spec, None) or mnist_family.download(spec)
    print(f"{spec.title}: {folder}")
    return 0


COMMANDS = {"run": command_run, "demo": command_demo, "strategies": command_strategies,
            "datasets": command_datasets, "runs": command_runs, "export": command_export, "label": command_label,
            "fetch": command_fetch}


# ------------------------------------------------------------------------------------------ main


class _ProgressFormatter(logging.Formatter):
    """Progress lines as they are; warnings and errors prefixed ``activelab: warning:``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"activelab: {record.levelname.lower()}: {message}"
        return message


def _progress_logging(quiet: bool) -> logging.Handler:
    """Send the ``activelab`` logger to stderr: INFO progress lines, or only warnings when ``quiet``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ProgressFormatter())
    logger = logging.getLogger("activelab")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    return handler


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a file descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``activelab`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("activelab")
    saved = logger.level, logger.propagate
    handler = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        handler = _progress_logging(getattr(args, "quiet", False))
        code = COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except UserError as error:
        print(f"activelab: error: {error}", file=sys.stderr)
        return error.exit_code
    except SystemExit as exit:  # --help and --version
        return exit.code if isinstance(exit.code, int) else 0
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        print("activelab: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
