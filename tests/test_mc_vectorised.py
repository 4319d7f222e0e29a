"""The stacked MC-dropout head equals T separate hooked passes with the same masks; other heads fall back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from activelab import mcdropout
from activelab.data.base import ArrayDataset
from activelab.inference import pool_outputs
from activelab.mcdropout import ConsistentDropout, StackedDropoutHead
from activelab.models import build_model
from activelab.models.heads import ActiveModel, ClassifierHead, DropoutHead
from activelab.strategies import registry

MC_SCORES = ["bald", "mc_margin", "mc_entropy", "variation_ratios", "mean_std"]


def pool(n=60, shape=(12, 12), seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset("toy", rng.random((n, *shape)).astype(np.float32), rng.integers(0, 3, n), ("a", "b", "c"))


def hooked_reference(model: ActiveModel, dataset, positions, *, mc_samples: int, seed: int) -> np.ndarray:
    """``probs_T_N_C`` the slow way: the trunk on every item, then the head once per pass with its hooks."""
    model.eval()
    with torch.no_grad():
        features = model.trunk(dataset.load(positions))
        with ConsistentDropout(model.head, n_samples=mc_samples, seed=seed) as masks:
            passes = []
            for sample in range(mc_samples):
                masks.use(sample)
                passes.append(torch.softmax(model.head(features).double(), 1).float())
    return torch.stack(passes).numpy()


def randomise_batchnorm(model: ActiveModel) -> ActiveModel:
    """Give every BatchNorm running statistics and an affine map far from the identity."""
    generator = torch.Generator().manual_seed(5)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm1d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator))
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.randn(layer.num_features, generator=generator))
            layer.bias.data.copy_(torch.randn(layer.num_features, generator=generator))
    return model


def assert_same_outputs_and_selections(stacked: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(stacked, reference, rtol=0, atol=1e-6)
    for name in MC_SCORES:
        for n in (1, 5, 20):
            ours = registry()[name](n, rng=np.random.default_rng(0), probs_T_N_C=stacked)
            theirs = registry()[name](n, rng=np.random.default_rng(0), probs_T_N_C=reference)
            assert ours.positions.tolist() == theirs.positions.tolist(), (name, n)


def test_the_small_cnn_head_is_stacked_and_equals_the_hooked_passes():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3).eval()
    assert StackedDropoutHead.supports(model.head, ConsistentDropout(model.head, n_samples=2, seed=0))
    dataset, positions = pool(), np.arange(60)
    for seed in range(3):
        stacked = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=20, seed=seed,
                               batch_size=16)["probs_T_N_C"]
        assert_same_outputs_and_selections(stacked, hooked_reference(model, dataset, positions, mc_samples=20,
                                                                     seed=seed))


@pytest.mark.parametrize("p_in, p_hidden", [(0.0, 0.5), (0.25, 0.0), (0.5, 0.5), (0.7, 0.3), (1.0, 0.5)])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_every_dropout_head_layout_equals_the_hooked_passes(p_in, p_hidden, batchnorm):
    torch.manual_seed(1)
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    model = randomise_batchnorm(ActiveModel.from_backbone(trunk, 3, (1, 12, 12), hidden=24, p_in=p_in,
                                                          p_hidden=p_hidden, batchnorm=batchnorm)).eval()
    dataset, positions = pool(40), np.arange(40)
    stacked = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=6, seed=2, batch_size=7)
    assert_same_outputs_and_selections(stacked["probs_T_N_C"],
                                       hooked_reference(model, dataset, positions, mc_samples=6, seed=2))


def test_passes_folded_in_small_groups_and_not_kept_give_the_same_outputs(monkeypatch):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3).eval()
    dataset, positions = pool(30), np.arange(30)
    whole = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=7, seed=4)["probs_T_N_C"]
    monkeypatch.setattr(mcdropout, "GROUP_ELEMENTS", 1)       # one pass per group
    monkeypatch.setattr(mcdropout, "KEEP_ELEMENTS", 1)        # gathered again for every batch
    grouped = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=7, seed=4,
                           batch_size=8)["probs_T_N_C"]
    np.testing.assert_allclose(grouped, whole, rtol=0, atol=1e-6)


def test_the_stacked_head_uses_the_masks_of_the_hooked_passes_pass_by_pass():
    torch.manual_seed(3)
    head = DropoutHead(20, 8, 4, p_in=0.4, p_hidden=0.5).eval()
    features = torch.randn(9, 20)
    stacked = StackedDropoutHead(head, ConsistentDropout(head, n_samples=5, seed=11))(features)
    masks = ConsistentDropout(head, n_samples=5, seed=11)
    with masks, torch.no_grad():
        for sample in (4, 0, 2):                                # any order: masks depend on (seed, layer, pass)
            masks.use(sample)
            torch.testing.assert_close(stacked[sample], head(features), rtol=0, atol=1e-6)


class ScaledHead(DropoutHead):
    """A subclass that changes what the head computes: the stacked passes must not assume its forward."""

    def forward_parts(self, features):
        hidden, logits = super().forward_parts(features)
        return hidden, 2.0 * logits


def user_heads():
    torch.manual_seed(2)
    classifier = ClassifierHead(nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(144, 3)), 144)
    custom = DropoutHead(144, 16, 3, p_in=0.2)
    custom.hidden = nn.Sequential(nn.Linear(144, 16), nn.Tanh(), nn.ReLU())
    no_statistics = DropoutHead(144, 16, 3, p_in=0.2, batchnorm=True)
    no_statistics.hidden[1] = nn.BatchNorm1d(16, track_running_stats=False)
    return {"classifier": classifier, "subclass": ScaledHead(144, 16, 3, p_in=0.2), "rebuilt hidden": custom,
            "batch statistics": no_statistics}


@pytest.mark.parametrize("name", list(user_heads()))
def test_heads_it_cannot_stack_fall_back_to_the_hooked_passes_exactly(name):
    head = user_heads()[name]
    model = ActiveModel(nn.Identity(), head).eval()
    assert not StackedDropoutHead.supports(head, ConsistentDropout(head, n_samples=2, seed=0))
    dataset, positions = pool(25), np.arange(25)
    probs = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=5, seed=3, batch_size=25)
    np.testing.assert_array_equal(probs["probs_T_N_C"],
                                  hooked_reference(model, dataset, positions, mc_samples=5, seed=3))


def test_a_head_in_training_mode_or_masks_for_another_module_are_not_stacked():
    head = DropoutHead(10, 4, 2, p_in=0.2)
    other = DropoutHead(10, 4, 2, p_in=0.2).eval()
    assert not StackedDropoutHead.supports(head.train(), ConsistentDropout(head, n_samples=2, seed=0))
    assert not StackedDropoutHead.supports(head.eval(), ConsistentDropout(other, n_samples=2, seed=0))
    with pytest.raises(ValueError, match="hooked passes"):
        StackedDropoutHead(head, ConsistentDropout(other, n_samples=2, seed=0))
