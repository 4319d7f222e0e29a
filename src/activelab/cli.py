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

from activelab.config import (EXECUTORS, INITIAL_CHOICES, MONITORS, STUDY_QUERY_STRATEGIES, TRACKERS, TRAIN_MODES, RunConfig,
                              closest, unknown_name)
from activelab.errors import ConfigError, StateError, UserError
from activelab.store import STORE_NAME

DEMO = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=100, al_samples_per_iter=100,
            al_iter=4, max_epochs=10, patience=3, n_val=500, n_test=2000, pool_size=10000, seed=0)

#: Width of listings and help (fits a 100-column terminal).
WIDTH = 100
#: Exit code after the reader of stdout went away (``activelab runs | head``), as a shell reports SIGPIPE.
BROKEN_PIPE_EXIT = 141

FAMILIES = ("baseline", "uncertainty", "bayesian", "batch", "diversity", "hybrid", "auxiliary")

#: ``activelab label``'s actions (exactly one per call): flag -> help text.
LABEL_ACTIONS = {
    "--labels": "CSV with columns id,label (class name or index) for items the dataset has no label for; rows "
                "with an empty label are left for later, so a filled-in `activelab query --to` file imports as it is",
    "--skip": "CSV with an id column: pending items to return to the pool, not offered again by this model",
    "--relabel": "CSV with columns id,label: corrected labels of labelled items",
    "--remove": "CSV with an id column: labelled items whose labels are taken back (they return to the pool)",
}
#: The Run step behind each action of ``activelab label``.
LABEL_OPERATIONS = {"--labels": "teach", "--skip": "skip", "--relabel": "relabel", "--remove": "remove"}
#: Columns of the batch file ``activelab query --to`` writes (``label`` left empty for a person).
BATCH_COLUMNS = ["rank", "id", "key", "score", "guess", "confidence", "label"]


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


def _scoring_flags(parser: argparse.ArgumentParser) -> None:
    """Where the pool is scored (``run`` and ``query``); none of it changes which images are chosen."""
    _flag(parser, "executor", choices=list(EXECUTORS), default=None,
          help="score the pool in this process or on a Ray cluster with Ray Data (pip install "
               "'activelab[ray]') (default: local, or what the run was last given)")
    _flag(parser, "ray-address", metavar="ADDRESS", default=None,
          help="the Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start a local instance)")
    _flag(parser, "ray-workers", metavar="N", type=int, default=None,
          help="Ray actors scoring the pool, one model copy each (default: one per CPU of the cluster)")


def _scoring_changes(args: argparse.Namespace) -> dict:
    """The scoring flags given on the command line, as changes to a saved run's configuration."""
    changes = {name: getattr(args, name) for name in ("ray_address", "ray_workers") if getattr(args, name) is not None}
    if args.executor is not None or changes:
        changes["executor"] = args.executor or "ray"
    return changes


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
    _flag(parser, "monitor", choices=list(MONITORS), default=defaults.monitor,
          help="what early stopping and the choice of the best epoch watch")
    _flag(parser, "lr", metavar="RATE", type=float, default=defaults.lr, help="learning rate of Adam")
    _flag(parser, "batch-size", metavar="N", type=int, default=defaults.batch_size, help="training batch size")
    _flag(parser, "num-workers", metavar="N", type=int, default=defaults.num_workers,
          help="data-loading worker processes (0 = load in the main process)")
    _flag(parser, "gpus", metavar="N", type=int, default=defaults.gpus, help="GPUs to train on (0 = CPU)")
    _scoring_flags(parser)
    _flag(parser, "seed", metavar="N", type=int, default=defaults.seed,
          help="seed of the splits, the initial labels, training and selection")
    _flag(parser, "mc-samples", metavar="T", type=int, default=defaults.mc_samples,
          help="MC-dropout passes for the bayesian and batch strategies (at least 2)")
    _flag(parser, "n-val", metavar="N", type=int, default=defaults.n_val, help="validation items (early stopping only)")
    _flag(parser, "n-test", metavar="N", type=int, default=None,
          help="test items (default: the official test split, else 20%%)")
    _flag(parser, "pool-size", metavar="N", type=int, default=None,
          help="subsample the unlabelled pool to N items (default: every remaining item)")
    _flag(parser, "pool-subset", metavar="N", type=int, default=None,
          help="each round, score and choose from only a fresh random N of the pool, as Gal et al. 2017's "
               "code did with 2000 (default: the whole pool)")
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
    _add_people_parsers(parser, commands)
    sweep = _subcommand(parser, commands, "sweep", "run a sweep file: the cross product of its axes, resumable")
    sweep.add_argument("file", metavar="FILE", help="the sweep file (.toml, .yaml)")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells and the work left; run nothing")
    sweep.add_argument("--executor", choices=["local", "ray"], default="local", help="where the cells run")
    sweep.add_argument("--ray-address", metavar="ADDRESS", default=None,
                       help='"auto", HOST:PORT or ray://HOST:PORT (default: a local Ray instance)')
    sweep.add_argument("--workers", metavar="N", type=int, default=None,
                       help="cells at once (default: cores / cpus_per_cell)")
    sweep.add_argument("--quiet", action="store_true", help="no progress line")
    report = _subcommand(parser, commands, "report", "learning curves, AUBC and paired tests against random, as HTML")
    report.add_argument("results_dir", metavar="RESULTS_DIR", help="a results folder (the --out of the runs)")
    report.add_argument("--out", metavar="DIR", default="report", help="folder for index.html, PNGs and CSVs")
    report.add_argument("--target", metavar="ACC", type=float, action="append", default=None,
                        help="a test accuracy whose label cost is reported; repeatable (default: 0.7, 0.8, 0.9)")
    report.add_argument("--seed", metavar="N", type=int, default=0,
                        help="seed of the paired bootstrap and of the typicality reference sample")
    report.add_argument("--diagnostics", action="store_true",
                        help="also load each run's last model and images: recall of every class and typicality of "
                             "the acquired images (seconds per run)")
    fetch = _subcommand(parser, commands, "fetch", "make sure a downloadable dataset is on this machine")
    fetch.add_argument("dataset", choices=["fashion-mnist", "mnist"], help="the dataset")
    serve = _subcommand(parser, commands, "serve", "start the labelling app for a project folder (upload, label, "
                        "suggest, export) and print the URL that logs in")
    serve.add_argument("--project", metavar="DIR", required=True, help="the project folder (created when missing)")
    serve.add_argument("--host", metavar="HOST", default="127.0.0.1",
                       help="address to bind; anything but 127.0.0.1 is reachable from other machines")
    serve.add_argument("--port", metavar="P", type=int, default=8765, help="port to listen on")
    serve.add_argument("--import-root", metavar="DIR", default=None,
                       help="allow importing folders of images from under this folder on the server (default: off)")
    from activelab.integrations.labelstudio import add_arguments as label_studio_arguments

    label_studio_arguments(_subcommand(parser, commands, "label-studio-backend",
                                       "answer Label Studio as its ML backend: predictions with a score per task, "
                                       "retraining when annotations arrive"))
    return parser


def _add_people_parsers(parser: _Parser, commands: argparse._SubParsersAction) -> None:
    """``query``, ``label`` and ``status``: the commands of a person labelling a run's images."""
    query = _subcommand(parser, commands, "query", "choose the next images a person should label (the model "
                        "is trained first when the labels changed)")
    query.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    query.add_argument("--n", metavar="N", type=int, default=None,
                       help="how many images to choose (default: the run's --al-samples-per-iter)")
    query.add_argument("--to", metavar="FILE", default=None,
                       help="also write the batch to FILE: .csv (rank,id,key,score,guess,confidence and an empty "
                            "label column to fill in for `activelab label --labels`) or .json")
    query.add_argument("--sheet", metavar="FILE.png", default=None,
                       help="also draw the batch's images as a PNG contact sheet, captioned with rank, id and "
                            "the model's guess")
    query.add_argument("--quiet", action="store_true", help="no progress bars or progress lines, results only")
    _scoring_flags(query)
    label = _subcommand(parser, commands, "label", "record a person's decisions in a run's ledger: labels, "
                        "skips, corrections or removals (one kind per call)")
    label.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    for flag, text in LABEL_ACTIONS.items():
        label.add_argument(flag, metavar="FILE", default=None, help=text)
    label.add_argument("--annotator", metavar="NAME", default=None,
                       help="who decided, kept in the run's history (default: your user name)")
    status = _subcommand(parser, commands, "status", "show a run's labels per class, pending images, latest "
                         "model and recent changes")
    status.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    status.add_argument("--json", action="store_true", help="print everything as JSON")


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
                                   num_workers=args.num_workers, **_scoring_changes(args))
    names = {field.name for field in dataclasses.fields(RunConfig)}
    values = {key: value for key, value in vars(args).items() if key in names}
    values["sampling_method"] = _sampling_method(args)
    values["source_kwargs"] = _options(args.source_option, "--source-option")
    values["strategy_kwargs"] = _options(args.strategy_option, "--strategy-option")
    values["trackers"] = ["csv", *dict.fromkeys([*(args.logger or []), *(["wandb"] if args.wandb else [])])]
    values.update({"executor": "local", **_scoring_changes(args)})
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
        from activelab.labelling import offline_dataset

        dataset = offline_dataset(RunConfig.load_saved(run_dir))
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


# ------------------------------------------------------------------------------------------ people


def _output_path(target: str | None, flag: str, suffixes: tuple[str, ...]) -> Path | None:
    """``target`` as a Path after checking its suffix and that it can be written (nothing is written yet)."""
    if target is None:
        return None
    path = Path(target)
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {path} must end in {' or '.join(suffixes)}, the format it is written in.")
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory.")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: the folder {path.parent} does not exist.")
    return path


def _clipped(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, keeping its end (where a file name is) behind '...'."""
    return text if len(text) <= width else "..." + text[len(text) - width + 3:]


def _batch_table(rows: list[dict]) -> list[str]:
    """The batch as table lines of at most :data:`WIDTH` columns: rank, id, score, guess, confidence, key."""
    head = f"{'rank':>4} {'id':>8} {'score':>9}  {'guess':<16} {'conf':>6}  "
    lines = [head + "key"]
    for row in rows:
        score = "-" if row["score"] is None else f"{row['score']:.4g}"
        guess = "-" if row["guess"] is None else _clipped(row["guess"], 16)
        confidence = "-" if row["confidence"] is None else f"{100 * row['confidence']:.1f}%"
        start = f"{row['rank']:>4} {row['id']:>8} {score:>9}  {guess:<16} {confidence:>6}  "
        lines.append(start + _clipped(row["key"], WIDTH - len(start)))
    return lines


def command_query(args: argparse.Namespace) -> int:
    from activelab.data.base import UNLABELLED
    from activelab.io import atomic_write_bytes
    from activelab.loop import ORACLE
    from activelab.run import Run

    to = _output_path(args.to, "--to", (".csv", ".json"))
    sheet_path = _output_path(args.sheet, "--sheet", (".png",))
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}.")
    run = Run.open(Path(args.run_dir), progress=not args.quiet, **_scoring_changes(args))
    previous = run.pending
    batch = run.query(args.n)
    known = run.dataset.labels[batch.ids] != UNLABELLED
    if known.any():  # the dataset is the oracle for what it knows, as in a simulated run
        run.teach(batch.ids[known], run.dataset.labels[batch.ids[known]], annotator=ORACLE)
        print(_wrapped("", f"{int(known.sum())} of the {len(batch)} selected image(s) already have a label in the "
                       "dataset and were taught from it.", 0))
        if run.pending is None:
            print("nothing is left to label in this selection; run `activelab query` again for the next one.")
            return 0
        batch = run.pending
    rows = batch.to_rows()
    source = "chosen at random as there is no model yet" if batch.round < 0 else \
        f"chosen by round {batch.round}'s model with {batch.strategy}, most informative first"
    print(_wrapped("", f"{len(batch)} image(s) to label, {source}:", 0))
    print("\n".join(_batch_table(rows)))
    if previous is not None and previous.round == batch.round and previous.ids.tolist() == batch.ids.tolist():
        print(_wrapped("", "this selection was made before and still waits; label or skip these images (or change "
                       "the labels) to get a new one.", 0))
    if to is not None:
        if to.suffix.lower() == ".json":
            document = {"run": run.config.name, "round": batch.round, "strategy": batch.strategy,
                        "items": [{**row, "label": None} for row in rows]}
            text = json.dumps(document, indent=1) + "\n"
        else:
            text = _serialise([{**row, "label": ""} for row in rows], BATCH_COLUMNS, "csv")
        atomic_write_bytes(to, text.encode())
        print(_wrapped("", f"wrote {len(rows)} item(s) to {to}", 0))
    if sheet_path is not None:
        from activelab.sheet import batch_sheet, png_bytes

        atomic_write_bytes(sheet_path, png_bytes(batch_sheet(batch, run.dataset)))
        print(_wrapped("", f"wrote a contact sheet of {len(batch)} image(s) to {sheet_path}", 0))
    target = to if to is not None and to.suffix.lower() == ".csv" else "FILE.csv"
    print(_wrapped("", f"next: fill in the label column and run `activelab label {args.run_dir} --labels {target}` "
                   "(or --skip FILE for images you cannot label).", 0))
    return 0


def command_label(args: argparse.Namespace) -> int:
    from activelab.labelling import apply_file

    given = [flag for flag in LABEL_ACTIONS if getattr(args, flag[2:]) is not None]
    if len(given) != 1:
        choices = ", ".join(LABEL_ACTIONS)
        raise ConfigError(f"give only one of {choices} per call, got {' and '.join(given)}." if given else
                          f"give one of {choices} (see `activelab label --help`).")
    flag = given[0]
    applied = apply_file(Path(args.run_dir), LABEL_OPERATIONS[flag], Path(getattr(args, flag[2:])),
                         annotator=args.annotator)
    count = applied.ids.size
    done = {"teach": f"recorded {count} label(s)", "skip": f"skipped {count} pending item(s)",
            "relabel": f"corrected {count} label(s)", "remove": f"removed the labels of {count} item(s)"}[applied.op]
    by = f" by {applied.annotator}" if applied.annotator else ""
    later = f"; {applied.left_for_later} row(s) with an empty label were left for later" \
        if applied.left_for_later else ""
    print(_wrapped("", f"{done}{by}{later}.", 0))
    if applied.op == "skip":
        hint = (f"the current model does not offer them again; `activelab query {args.run_dir}` shows what is "
                "still pending.")
    else:
        hint = (f"next: `activelab query {args.run_dir}` trains on the new labels and chooses the next images, or "
                f"`activelab run --resume {args.run_dir}` continues the experiment.")
    print(_wrapped("", hint, 0))
    return 0


def _status_text(status: dict) -> list[str]:
    """``activelab status`` for a person: at most :data:`WIDTH` columns a line."""
    from activelab.labelling import STATUS_ITEMS

    lines = [f"run {status['run']}: {status['strategy']} on {status['dataset']} with {status['model']}, "
             f"seed {status['seed']}", _wrapped("  directory: ", status["run_dir"], 13)]
    labelled = status["labelled"]
    lines.append(f"labelled: {labelled['total']} (pool: {status['pool']} unlabelled left; validation "
                 f"{status['val']}, test {status['test']})")
    width = max([8, *(len(name) for name in labelled["per_class"])])
    for name, count in labelled["per_class"].items():
        lines.append(f"  {_clipped(name, 40):<{min(width, 40)}} {count:>7}")
    last = status["last_round"]
    if last is None:
        lines.append("model: none yet" + (" (`activelab query` trains one on the labels)" if labelled["total"]
                                          else " (label a first batch, see `activelab query`)"))
    else:
        if last["seconds_evaluate"] is None:
            metrics = "not evaluated yet"
        elif status["test"]:
            metrics = (f"test accuracy {_percent(last['test_accuracy'])}, macro-F1 {_percent(last['test_macro_f1'])}"
                       f" on {status['test']} test images")
        else:
            metrics = "no test split"
        validation = f", validation accuracy {_percent(last['val_accuracy'])}" if last["val_accuracy"] is not None \
            else ""
        lines.append(_wrapped("model: ", f"round {last['round']} trained on {last['n_labelled']} labels; "
                              f"{metrics}{validation}", 7))
    if status["stale"] and last is not None:
        lines.append(_wrapped("  ", f"stale: the labels changed since round {last['round']} was trained; "
                              f"`activelab query` trains round {last['round'] + 1} first.", 2))
    elif last is not None:
        lines.append("  up to date: trained on the current labels")
    pending = status["pending"]
    if pending is None:
        lines.append("pending: nothing waits for a label")
    else:
        chooser = "chosen at random" if pending["round"] < 0 else f"round {pending['round']}, {pending['strategy']}"
        lines.append(f"pending: {pending['count']} image(s) wait for a label ({chooser})")
        lines.append(f"  {'rank':>4} {'id':>8}  key")
        for row in pending["items"][:STATUS_ITEMS]:
            start = f"  {row['rank']:>4} {row['id']:>8}  "
            lines.append(start + _clipped(row["key"] or "?", WIDTH - len(start)))
        if pending["count"] > STATUS_ITEMS:
            lines.append(f"  ... and {pending['count'] - STATUS_ITEMS} more (`activelab query RUN_DIR --to FILE` "
                         "lists them all)")
    skipped = status["skipped_this_round"]
    lines.append(_wrapped("skipped this round: ", f"{len(skipped)}" + (f" (ids {', '.join(map(str, skipped))})"
                                                                    if skipped else ""), 2))
    history = status["history"]
    if history:
        shown = history[-STATUS_ITEMS:]
        lines.append(f"history: the last {len(shown)} of {len(history)} change(s) to the labels")
        lines.append(f"  {'time':<25} {'op':<8} {'items':>6}  annotator")
        for event in shown:
            start = f"  {event['time']:<25} {event['op']:<8} {len(event['ids']):>6}  "
            lines.append(start + _clipped(str(event.get("annotator") or "-"), WIDTH - len(start)))
    else:
        lines.append("history: no labels changed yet")
    if status["note"]:
        lines.append(_wrapped("note: ", status["note"], 6))
    return lines


def command_status(args: argparse.Namespace) -> int:
    from activelab.labelling import status

    summary = status(Path(args.run_dir))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print("\n".join(_status_text(summary)))
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    from activelab.data.sources import mnist_family

    spec = {"fashion-mnist": mnist_family.FASHION, "mnist": mnist_family.MNIST}[args.dataset]
    folder = mnist_family.locate(spec, None) or mnist_family.download(spec)
    print(f"{spec.title}: {folder}")
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    from activelab.sweep import dry_run, load_sweep, run_sweep

    sweep = load_sweep(args.file)
    if args.dry_run:
        print(dry_run(sweep, workers=args.workers, executor=args.executor))
        return 0
    result = run_sweep(sweep, executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                       progress=not args.quiet)
    print(result.summary())
    return 0 if result.ok else 1


def command_report(args: argparse.Namespace) -> int:
    from activelab.report import DEFAULT_TARGETS, write_report

    page = write_report(Path(args.results_dir), Path(args.out), targets=args.target or DEFAULT_TARGETS,
                        seed=args.seed, diagnostics=args.diagnostics)
    print(f"report: {page}")
    return 0


def command_label_studio_backend(args: argparse.Namespace) -> int:
    from activelab.integrations.labelstudio import main as label_studio_main

    return label_studio_main(args)


def command_serve(args: argparse.Namespace) -> int:
    from activelab.app.server import serve

    serve(Path(args.project), host=args.host, port=args.port,
          import_root=Path(args.import_root) if args.import_root else None)
    return 0


COMMANDS = {"run": command_run, "sweep": command_sweep, "report": command_report, "demo": command_demo, "strategies": command_strategies,
            "datasets": command_datasets, "runs": command_runs, "export": command_export, "query": command_query,
            "label": command_label, "status": command_status, "fetch": command_fetch, "serve": command_serve,
            "label-studio-backend": command_label_studio_backend}


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
