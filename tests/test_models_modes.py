"""Training modes: a frozen trunk stays bit-identical (parameters and buffers) while the head learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from activelab.data.base import ArrayDataset
from activelab.errors import ConfigError
from activelab.models import TRAIN_MODES, build_model, check_train_mode, set_train_mode, trainable_parameters
from activelab.training import TrainSettings, fit


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def steps(model: nn.Module, n: int = 3, *, channels: int = 1) -> None:
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(trainable_parameters(model), lr=1e-2)
    model.train()
    for _ in range(n):
        images = torch.randn(8, channels, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (8,), generator=generator)
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimiser.step()


@pytest.mark.parametrize("name", ["resnet18", "torchvision:mobilenet_v3_small"])
def test_head_mode_leaves_every_trunk_tensor_bit_identical_and_trains_the_head(name):
    torch.manual_seed(0)
    model = set_train_mode(build_model(name, (1, 32, 32), 3), "head")
    trunk, head = snapshot(model.trunk), snapshot(model.head)
    assert {id(p) for p in trainable_parameters(model)} == {id(p) for p in model.head.parameters()}
    steps(model)
    assert model.training and model.head.training and not model.trunk.training
    assert not any(layer.training for layer in model.trunk.modules())
    after = model.trunk.state_dict()
    assert after.keys() == trunk.keys()
    assert all(torch.equal(after[key], trunk[key]) for key in trunk)  # weights, BatchNorm statistics, counters
    changed = [key for key, value in model.head.state_dict().items() if not torch.equal(value, head[key])]
    assert "output.weight" in changed and "hidden.1.running_mean" in changed


def test_finetune_mode_trains_everything_again():
    torch.manual_seed(0)
    model = set_train_mode(build_model("resnet18", (1, 32, 32), 3), "head")
    set_train_mode(model, "finetune")
    assert all(parameter.requires_grad for parameter in model.parameters())
    trunk = snapshot(model.trunk)
    steps(model, 1)
    assert model.trunk.training
    assert not torch.equal(model.trunk.state_dict()["conv1.weight"], trunk["conv1.weight"])
    assert not torch.equal(model.trunk.state_dict()["bn1.running_mean"], trunk["bn1.running_mean"])
    assert set_train_mode(model, "scratch") is model and not model.trunk_frozen


@pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode.*")  # the frozen trunk, on purpose
def test_a_frozen_trunk_stays_identical_through_lightning_training():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dataset = ArrayDataset("toy", rng.random((24, 1, 32, 32)).astype(np.float32), rng.integers(0, 3, 24),
                           ("a", "b", "c"))
    model = set_train_mode(build_model("resnet18", (1, 32, 32), 3), "head")
    trunk, head = snapshot(model.trunk), snapshot(model.head)
    ids = np.arange(16)
    fit(model, dataset, ids, dataset.labels[ids], np.arange(16, 24),
        TrainSettings(max_epochs=2, batch_size=8, progress=False), seed=0)
    assert all(torch.equal(model.trunk.state_dict()[key], value) for key, value in trunk.items())
    assert not torch.equal(model.head.state_dict()["output.weight"], head["output.weight"])


def test_modes_are_checked_in_one_sentence():
    assert set(TRAIN_MODES) == {"scratch", "finetune", "head"}
    assert check_train_mode("scratch") == "scratch"
    assert check_train_mode("fine-tune", pretrained=True) == "finetune"
    assert check_train_mode("head", weights="w.pth") == "head"
    with pytest.raises(ConfigError, match="unknown training mode 'haed'; did you mean head?"):
        check_train_mode("haed")
    with pytest.raises(ConfigError, match="training mode head starts from pretrained weights; add --pretrained"):
        check_train_mode("head")
    with pytest.raises(ConfigError, match="apply to an ActiveModel"):
        set_train_mode(nn.Linear(2, 2), "head")
