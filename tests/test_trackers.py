"""Trackers through Lightning's loggers, with the real packages in their local and offline modes."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from activelab import trackers
from activelab.errors import ConfigError
from activelab.records import RoundRecord
from activelab.trackers import finalize, log_every_n_steps, log_round, make_loggers, round_loggers

pl = pytest.importorskip("pytorch_lightning")

CONFIG = {"sampling_method": "margin", "seed": 0, "lr": 0.001, "n_test": None, "pretrained": False,
          "source_kwargs": {"size": "64"}, "al_iter": 2}
ROUNDS = [
    RoundRecord(0, 100, val_accuracy=0.5, epochs=3, test_accuracy=0.61, test_macro_f1=0.55, seconds_train=1.5,
                seconds_evaluate=0.25, seconds_score=0.5, seconds_select=0.125, acquired=True),
    RoundRecord(1, 200, val_accuracy=0.625, epochs=4, test_accuracy=0.72, test_macro_f1=0.7, seconds_train=2.5,
                seconds_evaluate=0.25),
]
COUNTS = [{"T-shirt/top": 60, "Trouser": 40, "Pullover": 0},
          {"T-shirt/top": 90, "Trouser": 70, "Pullover": 40}]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No tracker settings or credentials from the machine: a private HOME, no W&B or MLflow variables."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT",
                 "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "NETRC",
                 "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _log_rounds(loggers):
    for record, counts in zip(ROUNDS, COUNTS):
        log_round(loggers, record, counts)


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    (metrics,) = (run_dir / "csv").glob("version_*/metrics.csv")
    with open(metrics, newline="") as file:
        return list(csv.DictReader(file))


def _round_rows(rows):
    return [row for row in rows if row.get("round/n_labelled")]


# ------------------------------------------------------------------------------------------ names


def test_an_unknown_tracker_is_refused_with_the_valid_names_and_nothing_written(env, tmp_path):
    run_dir = tmp_path / "out" / "run"
    with pytest.raises(ConfigError) as error:
        make_loggers(["csv", "tensorbord"], run_dir, "run", CONFIG)
    message = str(error.value)
    assert message.startswith("unknown tracker 'tensorbord'; did you mean tensorboard?")
    assert "csv, tensorboard, mlflow, wandb" in message and message.count(".") == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_package_names_the_extra_to_install(env, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb looks like to import
    run_dir = tmp_path / "out" / "run"
    with pytest.raises(ConfigError, match=r"pip install 'activelab\[trackers\]'"):
        make_loggers(["csv", "wandb"], run_dir, "run", CONFIG)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ each tracker


def test_csv_holds_round_metrics_at_the_number_of_labels(env, tmp_path):
    run_dir = tmp_path / "out" / "run"
    loggers = make_loggers(["CSV"], run_dir, "run", CONFIG)
    _log_rounds(loggers)
    finalize(loggers)

    rows = _round_rows(_csv_rows(run_dir))
    assert [int(row["step"]) for row in rows] == [100, 200]
    assert [float(row["round/test_accuracy"]) for row in rows] == [0.61, 0.72]
    assert [float(row["round/index"]) for row in rows] == [0, 1]
    assert float(rows[0]["round/seconds_select"]) == 0.125 and rows[1]["round/seconds_select"] == ""
    assert float(rows[1]["round/labels_per_class/T-shirt_top"]) == 90
    assert [row["round/classes_without_labels"] for row in rows] == ["1", "0"]
    assert rows[0]["round/class_imbalance"] == "" and float(rows[1]["round/class_imbalance"]) == 90 / 40
    hparams = next((run_dir / "csv").glob("version_*/hparams.yaml")).read_text()
    assert "sampling_method: margin" in hparams and "source_kwargs/size" in hparams


def test_tensorboard_event_file_holds_round_scalars_and_hparams(env, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "out" / "run"
    loggers = make_loggers(["tensorboard"], run_dir, "run", CONFIG)
    _log_rounds(loggers)
    finalize(loggers)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("round/test_accuracy")
    assert [event.step for event in scalars] == [100, 200]
    assert [event.value for event in scalars] == pytest.approx([0.61, 0.72])
    assert [event.step for event in events.Scalars("round/labels_per_class/Pullover")] == [100, 200]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_mlflow_run_with_metric_history_in_a_local_store_continued_on_resume(env, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    run_dir = out / "margin-seed0"
    loggers = make_loggers(["mlflow"], run_dir, "margin-seed0", CONFIG)
    log_round(loggers, ROUNDS[0], COUNTS[0])
    finalize(loggers, "interrupted")

    uri = f"sqlite:///{(out / 'mlflow.db').resolve().as_posix()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("activelab")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "margin-seed0" and run.info.status == "KILLED"
    assert run.data.params["sampling_method"] == "margin" and run.data.params["source_kwargs/size"] == "64"

    resumed = make_loggers(["mlflow"], run_dir, "margin-seed0", dict(CONFIG, al_iter=5))  # al_iter may grow
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    log_round(resumed, ROUNDS[1], COUNTS[1])
    finalize(resumed, "success")

    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "round/test_accuracy")
    assert [(metric.step, metric.value) for metric in history] == [(100, 0.61), (200, 0.72)]
    assert run.data.params["al_iter"] == "2"  # MLflow parameters cannot change; the first value stays


def test_mlflow_honours_the_tracking_uri_from_the_environment(env, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'elsewhere.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "study")
    run_dir = tmp_path / "out" / "run"
    loggers = make_loggers(["mlflow"], run_dir, "run", CONFIG)
    log_round(loggers, ROUNDS[0])
    finalize(loggers)

    assert not (tmp_path / "out" / "mlflow.db").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.data.metrics["round/n_labelled"] == 100


def test_wandb_without_a_key_writes_an_offline_run_and_says_how_to_sync(env, tmp_path, caplog):
    run_dir = tmp_path / "out" / "run"
    with caplog.at_level(logging.WARNING, logger="activelab.trackers"):
        loggers = make_loggers(["wandb"], run_dir, "run", CONFIG)
    assert "WANDB_MODE" not in os.environ
    _log_rounds(loggers)
    finalize(loggers)

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (records,) = offline.glob("*.wandb")
    (record,) = [record for record in caplog.records if record.name == "activelab.trackers"]
    assert "offline" in record.getMessage() and f"wandb sync {offline}" in record.getMessage()
    data = records.read_bytes()  # W&B's record log: protobuf, keys and JSON values as plain text
    assert b"round/test_accuracy" in data and b"0.72" in data and b"sampling_method" in data


def test_wandb_credentials_are_found_in_the_environment_or_netrc(env, monkeypatch):
    assert not trackers._wandb_credentials()
    (env / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert trackers._wandb_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not trackers._wandb_credentials()
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert trackers._wandb_credentials()


# ------------------------------------------------------------------------------------------ training curves


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_index):
        inputs, targets = batch
        loss = F.cross_entropy(self.layer(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_index):
        inputs, targets = batch
        self.log("val_acc", (self.layer(inputs).argmax(1) == targets).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(loggers, round_index: int) -> None:
    generator = torch.Generator().manual_seed(round_index)
    inputs = torch.randn(32, 4, generator=generator)
    data = TensorDataset(inputs, (inputs[:, 0] > 0).long())
    train, val = DataLoader(data, batch_size=8), DataLoader(data, batch_size=32)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=round_loggers(loggers, round_index),
                         log_every_n_steps=log_every_n_steps(len(train)), enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(_Tiny(), train, val)


def test_training_curves_of_each_round_arrive_under_their_own_keys(env, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "out" / "run"
    loggers = make_loggers(["csv", "tensorboard", "mlflow"], run_dir, "run", CONFIG)
    mlflow_logger = loggers[2]
    client = MlflowClient(mlflow_logger._tracking_uri)
    for round_index, record in enumerate(ROUNDS):
        _fit(loggers, round_index)
        assert client.get_run(mlflow_logger.run_id).info.status == "RUNNING"  # the fit left the run open
        log_round(loggers, record)
    finalize(loggers)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"round_000/train_loss", "round_001/train_loss", "round_001/val_acc", "round/test_accuracy"} <= set(tags)
    steps = [[event.step for event in events.Scalars(f"round_{k:03d}/train_loss")] for k in (0, 1)]
    assert steps[0] == steps[1] and len(steps[0]) >= 2  # Lightning restarts its steps; the keys keep rounds apart

    rows = _csv_rows(run_dir)
    assert sum(bool(row.get("round_001/train_loss")) for row in rows) == len(steps[1])
    assert [int(row["step"]) for row in _round_rows(rows)] == [100, 200]

    history = client.get_metric_history(mlflow_logger.run_id, "round_001/val_acc")
    assert len(history) == 2  # one per epoch
    assert client.get_run(mlflow_logger.run_id).info.status == "FINISHED"


def test_only_chosen_fields_are_logged_and_finalize_checks_its_status(env, tmp_path):
    run_dir = tmp_path / "out" / "run"
    loggers = make_loggers(["csv"], run_dir, "run", CONFIG)
    log_round(loggers, ROUNDS[0], fields=("seconds_score", "seconds_select"))
    with pytest.raises(ValueError):
        log_round(loggers, ROUNDS[0], fields=("accuracy",))
    with pytest.raises(ValueError):
        finalize(loggers, "done")
    finalize(loggers)

    (row,) = _round_rows(_csv_rows(run_dir))
    logged = {key for key, value in row.items() if value}
    assert logged == {"step", "round/n_labelled", "round/seconds_score", "round/seconds_select"}
