"""CLI first contact: --version, bare `activelab`, help with defaults, hidden seed spellings, listings."""

from __future__ import annotations

import re

import pytest

from cli_helpers import run_cli, assert_one_sentence
from activelab.cli import build_parser, config_from_args, main


def test_version(capsys):
    from activelab import __version__

    code, out, err = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"activelab {__version__}" and not err


def test_bare_command_prints_usage_and_commands(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0 and not err
    assert out.startswith("usage: activelab")
    for command in ("run", "demo", "strategies", "datasets", "runs", "export", "label", "fetch"):
        assert re.search(rf"^\s+{command}\b", out, re.MULTILINE), command


def test_run_help_documents_every_flag_with_defaults_and_hides_seed_spellings(capsys):
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    assert "--sampling_method" not in out and "_" not in " ".join(re.findall(r"--[\w-]+", out))
    for flag, default in (("--max-epochs", "20"), ("--lr", "0.001"), ("--batch-size", "64"), ("--seed", "0"),
                          ("--sampling-method", "margin"), ("--mc-samples", "10")):
        line = next(line for line in out.splitlines() if line.strip().startswith(flag))
        assert len(line.split()) > 2, f"{flag} has no help text"
        assert f"default: {default})" in out[out.index(line):out.index(line) + 400], flag
    helpless = [line for line in out.splitlines() if re.match(r"^\s+--[\w-]+( [A-Z=\[\]]+)?$", line)]
    assert not helpless, helpless
    for flag in ("--augment", "--source-option", "--strategy-option", "--al-query-strategy", "--run-name",
                 "--logger", "--wandb", "--min-steps", "--monitor", "--initial"):
        assert flag in out


def test_seed_spellings_still_parse_next_to_hyphenated_ones():
    args = build_parser().parse_args(["run", "--sampling_method", "entropy", "--n_train_images", "7",
                                      "--max_epochs", "3", "--batch_size", "16", "--warm_start",
                                      "--source_option", "size=32", "--strategy-option", "beta=2",
                                      "--al_iter", "2", "--run_name", "x"])
    config = config_from_args(args)
    assert (config.sampling_method, config.n_train_images) == ("entropy", 7)
    assert (config.max_epochs, config.batch_size) == (3, 16)
    assert config.warm_start is True and config.al_iter == 2 and config.run_name == "x"
    assert config.source_kwargs == {"size": "32"} and config.strategy_kwargs == {"beta": "2"}
    hyphenated = config_from_args(build_parser().parse_args(["run", "--sampling-method", "entropy",
                                                             "--n-train-images", "7"]))
    assert hyphenated.sampling_method == "entropy" and hyphenated.n_train_images == 7
    defaults = config_from_args(build_parser().parse_args(["run"]))
    assert defaults.sampling_method == "margin" and defaults.max_epochs == 20 and defaults.augment is False


@pytest.mark.parametrize("argv, prog", [
    (["run", "--bogus"], "activelab run"),
    (["runs", "show", "x", "--bogus"], "activelab runs show"),
    (["export", "--bogus"], "activelab export"),
    (["strategies", "--bogus"], "activelab strategies"),
])
def test_unknown_flag_points_at_the_subcommand_help(capsys, argv, prog):
    assert_one_sentence(*run_cli(capsys, *argv), "unrecognized arguments: --bogus", f"(see `{prog} --help`)")


def test_runs_show_accepts_out_before_and_after():
    parser = build_parser()
    for argv in (["runs", "show", "--out", "D", "R"], ["runs", "show", "R", "--out", "D"],
                 ["runs", "--out", "D", "show", "R"]):
        args = parser.parse_args(argv)
        assert (args.action, args.run_id, args.out) == ("show", "R", "D"), argv
    listing = parser.parse_args(["runs", "--out", "D"])
    assert listing.action is None and listing.out == "D"
    assert parser.parse_args(["runs", "list", "--out", "D"]).out == "D"
    assert parser.parse_args(["runs", "show", "R"]).out == "results"


def test_strategies_short_listing_fits_100_columns(capsys):
    from activelab.strategies import registry

    code, out, _ = run_cli(capsys, "strategies")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    for name, strategy in registry().items():
        assert re.search(rf"^  {name}\b", out, re.MULTILINE), name
        assert re.search(rf"^{strategy.family}$", out, re.MULTILINE)
    assert "probs_T_N_C" not in out


def test_strategies_detail_and_verbose(capsys):
    from activelab.strategies import registry

    strategy = next(s for s in registry().values() if s.options)
    code, out, _ = run_cli(capsys, "strategies", strategy.name)
    assert code == 0 and out.startswith(f"{strategy.name} ({strategy.family})")
    assert "needs:" in out and "reference:" in out
    for key, default in strategy.options.items():
        assert f"{key}={default!r}" in out
    code, out, _ = run_cli(capsys, "strategies", "--verbose")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    assert all(f"{name} (" in out for name in registry())


def test_strategies_unknown_name_suggests_the_closest(capsys):
    assert_one_sentence(*run_cli(capsys, "strategies", "marginn"),
                        "unknown sampling method 'marginn'; did you mean margin?")


def test_datasets_listing_fits_100_columns_and_says_any_for_your_own(capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    assert not re.search(r"\b0 classes", out)
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("image-folder"))
    assert "any number of classes" in lines[start + 1]
