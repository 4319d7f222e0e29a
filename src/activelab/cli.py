"""The ``activelab`` command line.

``activelab run`` takes the study's flags (hyphenated primary spellings; the seed's underscored ones
work too). Every error a user can cause prints one sentence and exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from activelab.config import RunConfig
from activelab.errors import ConfigError, UserError

DEMO = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=100, al_samples_per_iter=100,
            al_iter=4, max_epochs=10, patience=3, n_val=500, n_test=2000, pool_size=10000, seed=0)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one sentence and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:
        raise ConfigError(f"{message} (see `{self.prog} --help`).")


def _switch(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--name`` with its seed spelling ``--na_me`` as an alias."""
    spellings = [f"--{name}"]
    if "-" in name:
        spellings.append(f"--{name.replace('-', '_')}")
    parser.add_argument(*spellings, dest=name.replace("-", "_"), **kwargs)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    _flag(parser, "sampling-method", default=defaults.sampling_method, help="strategy (see `activelab strategies`)")
    _flag(parser, "data-class", default=defaults.data_class, help="dataset (see `activelab datasets`)")
    _flag(parser, "model-class", default=defaults.model_class, help="cnn, resnet18 or resnet50")
    _flag(parser, "n-train-images", type=int, default=defaults.n_train_images, help="initial labelled images")
    _flag(parser, "al-samples-per-iter", type=int, default=defaults.al_samples_per_iter, help="labels per round")
    _flag(parser, "al-iter", type=int, default=defaults.al_iter, help="acquisition rounds")
    _flag(parser, "max-epochs", type=int, default=defaults.max_epochs)
    _flag(parser, "patience", type=int, default=defaults.patience, help="early-stopping patience in epochs")
    _flag(parser, "lr", type=float, default=defaults.lr)
    _flag(parser, "batch-size", type=int, default=defaults.batch_size)
    _flag(parser, "num-workers", type=int, default=defaults.num_workers)
    _flag(parser, "gpus", type=int, default=defaults.gpus, help="GPUs to use (0 = CPU)")
    _flag(parser, "seed", type=int, default=defaults.seed)
    _flag(parser, "mc-samples", type=int, default=defaults.mc_samples, help="MC-dropout passes")
    _flag(parser, "n-val", type=int, default=defaults.n_val, help="validation items (early stopping only)")
    _flag(parser, "n-test", type=int, default=None, help="test items (default: the official test split)")
    _flag(parser, "pool-size", type=int, default=None, help="subsample the unlabelled pool")
    _flag(parser, "n-holdout", type=int, default=None, help="holdout items for helper heads (ATL)")
    _flag(parser, "data-dir", default=None, help="folder holding the dataset files")
    _flag(parser, "weights", default=None, help="pretrained weights file for --pretrained")
    _flag(parser, "bands", default=None, help="DroughtWatch bands, e.g. B2,B3,B4,B8")
    for name, text in (("pretrained", "start from ImageNet weights"), ("warm-start", "fine-tune across rounds"),
                       ("binary", "DroughtWatch: 0 vs 1-3"), ("rgb", "DroughtWatch: bands B4,B3,B2"),
                       ("wandb", "accepted for the seed's scripts; results go to the SQLite store")):
        _flag(parser, name, type=_switch, nargs="?", const=True, default=False, help=text)
    parser.add_argument("--out", default=defaults.out, help="results folder (store + one folder per run)")
    parser.add_argument("--run-name", default=None, help="run folder name (default from dataset/strategy/seed)")
    parser.add_argument("--resume", metavar="DIR", default=None, help="continue the run in DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="activelab", description="Active learning on images.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_flags(commands.add_parser("run", help="run or resume one active-learning experiment"))
    demo = commands.add_parser("demo", help="margin vs random on Fashion-MNIST, a few rounds")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--quiet", action="store_true")
    commands.add_parser("strategies", help="list the strategies")
    datasets = commands.add_parser("datasets", help="list the dataset sources and whether their files are here")
    datasets.add_argument("--data-dir", default=None)
    runs = commands.add_parser("runs", help="list runs in a results folder, or show one")
    runs.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--out", default="results")
    export = commands.add_parser("export", help="export every round of every run as CSV or JSON")
    export.add_argument("--out", default="results")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--to", default=None, help="file to write (default: standard output)")
    label = commands.add_parser("label", help="add labels a person gave (CSV id,label) to a run's ledger")
    label.add_argument("run_dir", help="the run directory")
    label.add_argument("--labels", required=True, help="CSV with columns id,label (class name or index)")
    fetch = commands.add_parser("fetch", help="make sure a downloadable dataset is on this machine")
    fetch.add_argument("dataset", choices=["fashion-mnist", "mnist"])
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Map parsed ``run`` flags onto a RunConfig (``--resume DIR`` reads the saved config instead)."""
    if args.resume:
        return dataclasses.replace(RunConfig.load_saved(Path(args.resume)), progress=not args.quiet,
                                   num_workers=args.num_workers)
    names = {field.name for field in dataclasses.fields(RunConfig)}
    values = {key: value for key, value in vars(args).items() if key in names}
    return RunConfig(**values, progress=not args.quiet)


ROW = "{round:>5} {n_labelled:>7} {accuracy:>9} {f1:>9} {val:>8} {epochs:>6} {seconds:>8}"


def print_header() -> None:
    print(ROW.format(round="round", n_labelled="labels", accuracy="test acc", f1="macro-F1", val="val acc",
                     epochs="epochs", seconds="seconds"), flush=True)


def print_round(record: dict) -> None:
    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    seconds = sum(record.get(key) or 0 for key in ("seconds_train", "seconds_evaluate"))
    print(ROW.format(round=record["round"], n_labelled=record["n_labelled"],
                     accuracy=percent(record.get("test_accuracy")), f1=percent(record.get("test_macro_f1")),
                     val=percent(record.get("val_accuracy")), epochs=record.get("epochs", "-"),
                     seconds=f"{seconds:.1f}"), flush=True)


def _run(config: RunConfig) -> None:
    """Run ``config``, printing a title and header before the first round (not before errors)."""
    from activelab.loop import run_experiment

    def on_round(record: dict) -> None:
        if record["round"] == 0:
            print(f"run {config.name}: {config.sampling_method} on {config.data_class} with "
                  f"{config.model_class}, seed {config.seed}", flush=True)
            print_header()
        print_round(record)

    run_experiment(config, on_round=on_round)


def command_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _run(config)
    print(f"results: {config.run_dir} (store: {Path(config.out) / 'activelab.sqlite'})")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    strategies = ("margin", "random")
    for strategy in strategies:
        _run(RunConfig(**DEMO, sampling_method=strategy, out=args.out, run_name=f"demo-{strategy}",
                       progress=not args.quiet))
        print()
    from activelab.store import Store

    store = Store(Path(args.out) / "activelab.sqlite")
    print("final test accuracy by labels:")
    for strategy in strategies:
        rounds = store.rounds(f"demo-{strategy}")
        curve = ", ".join(f"{row['n_labelled']}: {100 * row['test_accuracy']:.1f}%" for row in rounds)
        print(f"  {strategy:>7}  {curve}")
    print(f"results: {args.out} (store: {Path(args.out) / 'activelab.sqlite'}); one seed only, see "
          "`activelab export` for the rounds")
    return 0


def command_strategies(args: argparse.Namespace) -> int:
    from activelab.strategies import registry

    for name, strategy in sorted(registry().items()):
        needs = ", ".join(strategy.needs) or "pool size"
        print(f"{name:<36} {strategy.description} [{strategy.family}; needs {needs}; {strategy.reference}]")
    return 0


def command_datasets(args: argparse.Namespace) -> int:
    from activelab.data.sources import sources

    for name, source in sorted(sources().items()):
        location = source.locate(Path(args.data_dir) if args.data_dir else None)
        where = f"present: {location}" if location else "files not found"
        print(f"{name:<14} {source.classes:>3} classes {source.size:>10} images  {source.description} ({where})")
    return 0


def command_runs(args: argparse.Namespace) -> int:
    from activelab.store import Store

    store = Store(Path(args.out) / "activelab.sqlite")
    if args.action == "show":
        if not args.run_id:
            raise ConfigError("`activelab runs show` needs a run id (see `activelab runs`).")
        run = store.run(args.run_id)
        if run is None:
            raise ConfigError(f"no run '{args.run_id}' in {store.path}.")
        print(json.dumps({**run, "rounds": store.rounds(args.run_id)}, indent=1))
        return 0
    rows = store.runs()
    if not rows:
        print(f"no runs in {store.path}")
        return 0
    print(f"{'run':<48} {'status':<9} {'rounds':>6} {'labels':>7} {'test acc':>9}")
    for row in rows:
        accuracy = "-" if row["test_accuracy"] is None else f"{100 * row['test_accuracy']:.2f}%"
        print(f"{row['run_id']:<48} {row['status']:<9} {row['rounds']:>6} {row['n_labelled'] or 0:>7} {accuracy:>9}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from activelab.io import atomic_write_bytes
    from activelab.store import Store, export_rounds

    text = export_rounds(Store(Path(args.out) / "activelab.sqlite"), args.format)
    if args.to:
        atomic_write_bytes(Path(args.to), text.encode())
        print(f"wrote {args.to}")
    else:
        sys.stdout.write(text)
    return 0


def command_label(args: argparse.Namespace) -> int:
    from activelab.labelling import import_labels

    count = import_labels(Path(args.run_dir), Path(args.labels))
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``activelab`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"activelab: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("activelab: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
