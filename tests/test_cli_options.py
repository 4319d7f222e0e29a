"""Run flags: MC samples, GPUs, --wandb, name suggestions, source/strategy options, --augment, the study's
--al-query-strategy. Every refusal is one sentence, exit code 2, and leaves the output folder untouched."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from activelab.cli import build_parser, config_from_args, main
from activelab.config import STUDY_QUERY_STRATEGIES, RunConfig
from activelab.errors import ConfigError

SMALL = ["--pool-size", "300", "--n-test", "200", "--n-val", "50", "--max-epochs", "1", "--quiet"]


def refused(capsys, tmp_path, *argv) -> str:
    """Run ``activelab run ARGV`` expecting one sentence, exit 2, no output and nothing on disk."""
    out = tmp_path / "r"
    code, stdout, err = run_cli(capsys, "run", *SMALL, *argv, "--out", str(out))
    assert code == 2, err
    assert err.startswith("activelab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in stdout + err and stdout == ""
    assert not out.exists()
    return err


def config(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["run", *argv]))


# ------------------------------------------------------------------ MC samples, GPUs, --wandb


@pytest.mark.parametrize("strategy", ["bald", "batchbald", "mc_entropy"])
def test_mc_strategy_with_one_mc_sample_is_refused(capsys, tmp_path, strategy):
    err = refused(capsys, tmp_path, "--sampling-method", strategy, "--mc-samples", "1")
    assert f"{strategy} needs at least 2 MC samples (--mc-samples)" in err


def test_one_mc_sample_is_fine_for_a_deterministic_strategy():
    assert RunConfig(sampling_method="margin", mc_samples=1).validated().mc_samples == 1


def test_gpus_without_a_gpu_is_refused(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = refused(capsys, tmp_path, "--gpus", "1")
    assert "--gpus 1 asks for a GPU but torch finds none" in err and "--gpus 0" in err


def test_more_gpus_than_the_machine_has_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="asks for 2 GPUs but torch finds 1"):
        RunConfig(gpus=2).validated()
    assert RunConfig(gpus=1).validated().gpus == 1


def test_wandb_means_the_wandb_logger_and_loggers_add_to_csv():
    assert config("--wandb").trackers == ["csv", "wandb"]
    assert config("--wandb", "false").trackers == ["csv"]
    assert config("--logger", "tensorboard", "--logger", "mlflow", "--wandb").trackers == [
        "csv", "tensorboard", "mlflow", "wandb"]


def test_an_unknown_logger_is_one_sentence(capsys, tmp_path):
    err = refused(capsys, tmp_path, "--logger", "neptune")
    assert "invalid choice: 'neptune'" in err and "activelab run --help" in err


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("argv, message", [
    (["--sampling-method", "marginn"], "unknown sampling method 'marginn'; did you mean margin?"),
    (["--sampling-method", "nonsense"], "unknown sampling method 'nonsense'; see `activelab strategies`"),
    (["--sampling-method", "uncertainty_sampling"], "--sampling-method least_confidence"),
    (["--data-class", "fashion-mnst"], "unknown dataset 'fashion-mnst'; did you mean fashion-mnist?"),
    (["--data-class", "imagenet"], "unknown dataset 'imagenet'; choose one of: app-project, arrays,"),
    (["--model-class", "resnt18"], "unknown model 'resnt18'; did you mean resnet18?"),
    (["--model-class", "vgg"], "unknown model 'vgg'; did you mean torchvision:vgg19?"),
])
def test_misspelt_names_suggest_the_closest(capsys, tmp_path, argv, message):
    assert message in refused(capsys, tmp_path, *argv)


# ------------------------------------------------------------------ source and strategy options


@pytest.mark.parametrize("argv, message", [
    (["--data-class", "digits", "--binary"],
     "the digits dataset has no option binary (--binary); it takes no options."),
    (["--data-class", "digits", "--source-option", "size=8"], "the digits dataset has no option size"),
    (["--data-class", "image-folder", "--source-option", "sise=8"],
     "no option sise (--source-option sise=...; did you mean size?); its options are size, grayscale"),
    (["--source-option", "size"], "argument --source-option: expected KEY=VALUE, got 'size'"),
    (["--strategy-option", "=2"], "argument --strategy-option: expected KEY=VALUE, got '=2'"),
    (["--strategy-option", "beta=2"], "the strategy margin has no option beta; it takes no options."),
    (["--sampling-method", "power_margin", "--strategy-option", "bta=2"],
     "the strategy power_margin has no option bta (did you mean beta?); its options are beta."),
    (["--sampling-method", "power_margin", "--strategy-option", "beta=high"],
     "the strategy option beta='high' of power_margin must be a finite number"),
    (["--sampling-method", "power_margin", "--strategy-option", "beta=1", "--strategy-option", "beta=2"],
     "--strategy-option beta is given twice (1 and 2); give it once."),
    (["--data-class", "droughtwatch", "--binary", "--source-option", "binary=true"],
     "the dataset option binary is given twice"),
])
def test_bad_options_are_one_sentence(capsys, tmp_path, argv, message):
    assert message in refused(capsys, tmp_path, *argv)


def test_strategy_options_convert_to_the_type_of_the_declared_default():
    from activelab.strategies import registry

    typed = {int: "7", float: "0.25", bool: "yes"}
    checked = 0
    for name, strategy in registry().items():
        for key, default in strategy.options.items():
            kind = type(default)
            if kind not in typed:
                continue
            options = RunConfig(sampling_method=name, strategy_kwargs={key: typed[kind]}).strategy_options()
            assert type(options[key]) is kind and options[key] == kind(7 if kind is int else
                                                                         0.25 if kind is float else True)
            checked += 1
    assert checked, "no strategy declares an int, float or bool option"
    integer_option = next((name, key) for name, s in registry().items() for key, d in s.options.items()
                          if type(d) is int)
    with pytest.raises(ConfigError, match="must be a whole number"):
        RunConfig(sampling_method=integer_option[0], strategy_kwargs={integer_option[1]: "1.5"}).strategy_options()


def test_options_are_saved_typed_and_refuse_a_resume_with_other_values():
    cli = config("--sampling-method", "power_margin", "--strategy-option", "beta=2", "--data-class", "image-folder",
                 "--source-option", "size=16", "--source-option", "grayscale=true").validated()
    assert cli.strategy_options() == {"beta": 2.0} and cli.strategy_kwargs == {"beta": 2.0}
    assert cli.source_options() == {"size": "16", "grayscale": "true"}
    saved = json.loads(json.dumps(cli.to_dict()))
    assert RunConfig.from_dict(saved).differences(cli) == []
    python = RunConfig(sampling_method="power_margin", strategy_kwargs={"beta": 2}, data_class="image-folder",
                       source_kwargs={"size": "16", "grayscale": "true"}).validated()
    assert python.differences(cli) == []
    other = RunConfig.from_dict({**saved, "strategy_kwargs": {"beta": 3.0}, "source_kwargs": {"size": "32"}})
    assert set(other.differences(cli)) == {"strategy_kwargs", "source_kwargs"}


def test_flag_and_extra_source_options_merge():
    merged = config("--data-class", "droughtwatch", "--binary", "--source-option", "bands=B2,B3").source_options()
    assert merged == {"binary": True, "bands": "B2,B3"}
    assert RunConfig().source_options() == {}


def test_augment_is_a_real_switch_and_part_of_the_configuration():
    assert config().augment is False
    assert config("--augment").augment is True
    assert config("--augment", "false").augment is False
    assert RunConfig(augment=True).differences(RunConfig()) == ["augment"]


# ------------------------------------------------------------------ the study's --al_query_strategy


@pytest.mark.parametrize("study, ours", [
    ("uncertainty_sampling", "least_confidence"), ("margin_sampling", "margin"), ("entropy_sampling", "entropy"),
    ("max_entropy", "mc_entropy"), ("bald", "bald"), ("random", "random"), ("outlier", "outlier"),
    ("cluster_outlier_combined", "cluster_outlier_combined"),
])
@pytest.mark.parametrize("spelling", ["--al-query-strategy", "--al_query_strategy"])
def test_study_query_strategy_names_map_to_ours(study, ours, spelling):
    assert STUDY_QUERY_STRATEGIES[study] == ours
    chosen = config(spelling, study)
    assert chosen.sampling_method == ours
    chosen.validated()
    assert config("--sampling-method", ours, spelling, study).sampling_method == ours


def test_study_query_strategy_disagreeing_with_sampling_method_is_refused(capsys, tmp_path):
    err = refused(capsys, tmp_path, "--sampling_method", "margin", "--al_query_strategy", "bald")
    assert "--sampling-method margin and --al-query-strategy bald (= bald) ask for different strategies" in err


def test_study_query_strategy_unknown_name(capsys, tmp_path):
    err = refused(capsys, tmp_path, "--al-query-strategy", "margin_samplin")
    assert "unknown --al-query-strategy 'margin_samplin'; did you mean margin_sampling?" in err
    assert config("--al-query-strategy", "coreset").sampling_method == "coreset"
