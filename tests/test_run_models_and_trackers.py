"""A Run with the models, training modes and trackers a user already has: real packages, one round each."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from activelab.models import build_model
from activelab.run import Run

ONE_ROUND = dict(pool_size=300, n_test=100, n_val=50, n_train_images=30, al_samples_per_iter=10, max_epochs=1, min_steps=0,
                 batch_size=16, seed=2, progress=False)


@pytest.mark.parametrize("model", ["timm:resnet10t", "torchvision:mobilenet_v3_small"])
def test_a_timm_and_a_torchvision_model_run_a_round(tmp_path, fashion, model):
    run = Run.create(tmp_path / "r", data="fashion-mnist", model=model, strategy="bald", mc_samples=3, **ONE_ROUND)
    batch = run.query()
    assert len(batch) == 10 and run.rounds[0].test_accuracy is not None
    run.teach(batch.ids, fashion.labels[batch.ids])
    assert run.fit().n_labelled == 40


def pretrained_file(tmp_path, fashion) -> str:
    """A 'pretrained' model's weights, written the way a user would save theirs."""
    torch.manual_seed(123)
    model = build_model("cnn", fashion.input_shape, fashion.num_classes)
    path = tmp_path / "pretrained.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def test_head_mode_trains_only_the_head_and_finetune_trains_everything(tmp_path, fashion):
    weights = pretrained_file(tmp_path, fashion)
    loaded = build_model("cnn", fashion.input_shape, fashion.num_classes, weights=tmp_path / "pretrained.pt")
    trained = {}
    for mode in ("head", "finetune"):
        run = Run.create(tmp_path / mode, data="fashion-mnist", weights=weights, train_mode=mode, **ONE_ROUND)
        run.fit()
        trained[mode] = torch.load(run.run_dir / "models" / "round_000.pt", weights_only=True)["model"]
    start = loaded.state_dict()
    trunk = [key for key in start if key.startswith("trunk.")]
    head = [key for key in start if key.startswith("head.") and start[key].is_floating_point()]
    assert trunk and all(torch.equal(trained["head"][key], start[key]) for key in trunk)
    assert any(not torch.equal(trained["head"][key], start[key]) for key in head)
    assert any(not torch.equal(trained["finetune"][key], start[key]) for key in trunk)


def test_the_learning_rate_finder_picks_and_records_a_rate(tmp_path, fashion):
    run = Run.create(tmp_path / "lr", data="fashion-mnist", auto_lr=True, **{**ONE_ROUND, "max_epochs": 2})
    record = run.fit()
    assert record.lr is not None and record.lr != pytest.approx(1e-3) and 1e-8 <= record.lr <= 1


def test_trackers_receive_training_curves_and_round_metrics(tmp_path, fashion, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    run = Run.create(tmp_path / "out" / "tracked", data="fashion-mnist", trackers=["csv", "tensorboard"],
                     **ONE_ROUND)
    batch = run.query()
    run.teach(batch.ids, fashion.labels[batch.ids])
    run.query()
    run.close(finished=True)
    rows = list(csv.DictReader(next((run.run_dir / "csv").glob("version_*/metrics.csv")).open()))
    accuracy = {int(row["step"]): float(row["round/test_accuracy"]) for row in rows if row.get("round/test_accuracy")}
    assert accuracy == {30: pytest.approx(run.rounds[0].test_accuracy), 40: pytest.approx(run.rounds[1].test_accuracy)}
    assert any(row.get("round_000/train_loss") for row in rows) and any(row.get("round_001/train_loss") for row in rows)
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("round/test_accuracy")]
    assert steps == [30, 40]
    assert np.isfinite([event.value for event in events.Scalars("round/labels_per_class/Trouser")]).all()


def test_a_python_backbone_runs_and_must_be_given_again_to_reopen(tmp_path, fashion):
    from torch import nn

    from activelab.errors import ConfigError

    def my_backbone() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())

    run = Run.create(tmp_path / "mine", data="fashion-mnist", model=my_backbone, strategy="bald", mc_samples=3,
                     **ONE_ROUND)
    batch = run.query()
    assert run.config.model_class == "python:test_a_python_backbone_runs_and_must_be_given_again_to_reopen.<locals>.my_backbone"
    assert len(batch) == 10 and run.rounds[0].test_accuracy is not None
    with pytest.raises(ConfigError, match="open it from Python with Run.open"):
        Run.open(run.run_dir)
    assert Run.open(run.run_dir, model=my_backbone).query().ids.tolist() == batch.ids.tolist()
