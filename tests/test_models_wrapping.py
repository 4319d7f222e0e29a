"""Any module as a model: a backbone plus the dropout head, or a user's classifier cut after a named layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from activelab.data.base import ArrayDataset
from activelab.errors import ConfigError
from activelab.inference import pool_outputs
from activelab.models import ActiveModel, ClassifierHead, DropoutHead, split_at, wrap_backbone


def tiny_dataset(shape, n=6):
    rng = np.random.default_rng(0)
    return ArrayDataset("toy", rng.random((n, *shape)).astype(np.float32), rng.integers(0, 3, n), ("a", "b", "c"))


class Net(nn.Module):
    """A user's classifier written the usual way: functional calls and a reshape in forward."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16, 10)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(10, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.norm(self.conv(x))))
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        return self.fc2(self.drop(x))


def test_a_backbone_gets_the_dropout_head_and_works_with_mc_dropout():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ActiveModel.from_backbone(backbone, 3, (3, 16, 16))
    assert model.trunk is backbone and isinstance(model.head, DropoutHead)
    assert model.head.hidden[0].in_features == 8 and model.head.embedding_dim == 512
    out = pool_outputs(model, tiny_dataset((3, 16, 16)), np.arange(6), {"probs_T_N_C", "probs_N_C", "emb_N_D"},
                       mc_samples=3, batch_size=4)
    assert out["probs_T_N_C"].shape == (3, 6, 3) and out["emb_N_D"].shape == (6, 512)
    assert wrap_backbone(backbone, 5, (3, 16, 16)).head.output.out_features == 5
    assert ActiveModel.from_backbone(backbone, 2, feature_dim=8).head.hidden[0].in_features == 8


def test_a_backbone_must_return_one_feature_tensor():
    with pytest.raises(ConfigError, match="needs input_shape"):
        ActiveModel.from_backbone(nn.Flatten(), 3)

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(ConfigError, match=r"must return one \[N, features\] tensor per batch, but returns tuple"):
        ActiveModel.from_backbone(Pair(), 3, (1, 8, 8))
    with pytest.raises(ConfigError, match="the backbone cannot take images of shape 1x8x8"):
        ActiveModel.from_backbone(nn.Linear(5, 5), 3, (1, 8, 8))


def test_a_classifier_cut_after_a_layer_computes_what_it_computed_and_keeps_mc_dropout():
    torch.manual_seed(0)
    net = Net()
    model = ActiveModel.from_classifier(net, "fc1", (1, 8, 8)).eval()
    assert isinstance(model.head, ClassifierHead) and model.head.embedding_dim == 10
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(images), net.eval()(images), atol=1e-6)
        embedding, logits = model.head.forward_parts(model.trunk(images))
        assert torch.allclose(embedding, net.fc1(net.pool(F.relu(net.norm(net.conv(images)))).flatten(1)), atol=1e-6)
    # the layers are shared with the user's network, not copied, and sit on the right side of the cut
    assert model.trunk.conv is net.conv and model.head.module.fc2 is net.fc2
    trunk_names = {name for name, _ in model.trunk.named_parameters()}
    assert trunk_names == {"conv.weight", "conv.bias", "norm.weight", "norm.bias", "fc1.weight", "fc1.bias"}
    out = pool_outputs(model, tiny_dataset((1, 8, 8)), np.arange(6), {"probs_T_N_C", "probs_N_C", "emb_N_D"},
                       mc_samples=4, batch_size=4, seed=3)
    assert out["probs_T_N_C"].shape == (4, 6, 3) and out["emb_N_D"].shape == (6, 10)
    assert not np.allclose(out["probs_T_N_C"][0], out["probs_T_N_C"][1])
    with torch.no_grad():
        np.testing.assert_allclose(out["probs_N_C"], torch.softmax(net(tiny_dataset((1, 8, 8)).load(np.arange(6))), 1),
                                   atol=1e-5)


def test_a_torchvision_resnet_cut_at_avgpool_and_what_mc_dropout_then_says():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    model = ActiveModel.from_classifier(net, "avgpool", (3, 32, 32)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), net(images), atol=1e-5)
    assert model.head.embedding_dim == 512
    dataset = tiny_dataset((3, 32, 32))
    out = pool_outputs(model, dataset, np.arange(6), {"probs_N_C", "emb_N_D"})
    assert out["emb_N_D"].shape == (6, 512)
    with pytest.raises(ConfigError, match="MC dropout needs a dropout layer"):
        pool_outputs(model, dataset, np.arange(6), {"probs_T_N_C"}, mc_samples=3)
    # a fresh dropout head on the cut trunk instead of the network's own fc
    fresh = ActiveModel.from_backbone(split_at(net, "avgpool")[0], 3, (3, 32, 32))
    assert fresh.head.hidden[0].in_features == 512
    assert pool_outputs(fresh, dataset, np.arange(6), {"probs_T_N_C"}, mc_samples=3)["probs_T_N_C"].shape == (3, 6, 3)


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        x = x.flatten(1)
        return self.out(self.body(x) + x)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.layer(self.layer(x.flatten(1))))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.layer(x.flatten(1))
        return -self.layer(x.flatten(1))


@pytest.mark.parametrize("module, layer, message", [
    (Net(), "fc_1", "Net has no layer 'fc_1'; did you mean fc1?"),
    (Net(), "fc2", "nothing follows layer 'fc2' in Net"),
    (Skip(), "body", "Skip cannot be cut at 'body': a later step (add) also uses flatten, computed before the cut"),
    (Twice(), "layer", "Twice calls layer 'layer' 2 times in forward"),
    (Branchy(), "layer", "torch.fx cannot trace Branchy"),
])
def test_cuts_that_cannot_work_are_refused_in_one_sentence(module, layer, message):
    with pytest.raises(ConfigError) as error:
        ActiveModel.from_classifier(module, layer, (1, 2, 2))
    assert message in str(error.value)


def test_a_classifier_that_does_not_return_logits_is_refused():
    class Grid(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.head = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return self.head(self.conv(x))

    with pytest.raises(ConfigError, match=r"must return logits of shape \[N, classes\], but returns \(2, 3, 4, 4\)"):
        ActiveModel.from_classifier(Grid(), "conv", (1, 4, 4))
