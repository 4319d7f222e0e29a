"""CLI: listings, and one clear sentence with exit code 2 for every bad input (nothing half-written)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_helpers import run_cli
from activelab.cli import main

SMALL = ["--pool-size", "300", "--n-test", "200", "--n-val", "50", "--max-epochs", "1", "--min-steps", "0", "--quiet"]


def test_strategies_lists_every_registered_strategy(capsys):
    from activelab.strategies import registry

    code, out, _ = run_cli(capsys, "strategies")
    assert code == 0
    for name in registry():
        assert name in out


def test_datasets_lists_sources_with_presence(capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("fashion-mnist"))
    entry = " ".join(lines[start:start + 3])
    assert "present" in entry and "10 classes" in entry
    assert "digits" in out and "mnist" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--sampling-method", "nonsense"], "unknown sampling method 'nonsense'"),
    (["run", "--data-class", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "--model-class", "vgg"], "unknown model 'vgg'"),
    (["run", "--n-train-images", "-1"], "`n_train_images`=-1 must be >= 0"),
    (["run", "--al-samples-per-iter", "-5"], "`al_samples_per_iter`=-5 must be >= 1"),
    (["run", "--lr", "0"], "`lr`=0.0 must be > 0.0"),
    (["run", "--pool-subset", "0"], "`pool_subset`=0 must be >= 1"),
    (["run", "--n-train-images", "200", "--al-iter", "3", "--al-samples-per-iter", "100"],
     "the labelling budget of 500 labels"),
    (["run", "--pretrained", "maybe"], "expected true or false"),
    (["run", "--data-dir", "/nonexistent/folder"], "/nonexistent/folder does not hold the Fashion-MNIST files"),
    (["run", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["runs", "show", "nope"], "there is no results store in"),
])
def test_bad_input_is_one_sentence_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, *(SMALL if argv[0] == "run" else []), "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith("activelab: error: ") and message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("state.json"))


def test_output_path_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "run", *SMALL, "--out", str(target))
    assert code == 2 and "exists and is not a directory" in err
    assert target.read_text() == "keep me"


def test_unwritable_output_directory(capsys, tmp_path):
    import os

    if os.geteuid() == 0:
        # root ignores permission bits; a path below a regular file is unwritable for everyone
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        out = blocker / "sub"
    else:
        out = tmp_path / "locked"
        out.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "run", *SMALL, "--out", str(out))
    assert code == 2 and ("not a directory" in err or "cannot create" in err or "not writable" in err)


def test_seed_spellings_and_boolean_switches_parse():
    from activelab.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--sampling_method", "entropy", "--n_train_images", "7",
                                      "--pretrained", "False", "--warm-start"])
    config = config_from_args(args)
    assert config.sampling_method == "entropy" and config.n_train_images == 7
    assert config.pretrained is False and config.warm_start is True


def test_console_script_prints_no_traceback():
    result = subprocess.run([sys.executable, "-m", "activelab.cli", "run", "--sampling-method", "x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown sampling method 'x'" in result.stderr
