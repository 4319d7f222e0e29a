"""Inference: MC dropout touches only dropout, the trunk runs once, results do not depend on batching."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from activelab.data.base import ArrayDataset
from activelab.inference import mc_dropout, pool_outputs
from activelab.models import build_model


def small_dataset(n=37):
    rng = np.random.default_rng(0)
    return ArrayDataset("toy", rng.random((n, 12, 12)).astype(np.float32), rng.integers(0, 3, n), ("a", "b", "c"))


def test_outputs_match_the_model_and_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3).eval()
    dataset = small_dataset()
    positions = np.array([5, 1, 30, 2, 2, 17])
    wanted = {"probs_N_C", "emb_N_D", "act_N_L", "grad_emb_N_D", "probs_T_N_C"}
    small = pool_outputs(model, dataset, positions, wanted, batch_size=2, mc_samples=4, seed=9)
    large = pool_outputs(model, dataset, positions, wanted, batch_size=64, mc_samples=4, seed=9)
    with torch.no_grad():
        expected = torch.softmax(model(dataset.load(positions)), 1).numpy()
    np.testing.assert_allclose(small["probs_N_C"], expected, atol=1e-5)
    for name in ("probs_N_C", "emb_N_D", "act_N_L", "grad_emb_N_D"):
        np.testing.assert_allclose(small[name], large[name], atol=1e-5)
    assert small["probs_T_N_C"].shape == (4, 6, 3)
    assert small["grad_emb_N_D"].shape == (6, 3 * 128)
    np.testing.assert_allclose(small["probs_T_N_C"].sum(-1), 1.0, atol=1e-5)


def test_mc_samples_vary_but_are_reproducible_for_a_seed():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3)
    dataset = small_dataset()
    first = pool_outputs(model, dataset, np.arange(10), {"probs_T_N_C"}, mc_samples=5, seed=1)["probs_T_N_C"]
    again = pool_outputs(model, dataset, np.arange(10), {"probs_T_N_C"}, mc_samples=5, seed=1)["probs_T_N_C"]
    assert np.array_equal(first, again)
    assert not np.allclose(first[0], first[1])


def test_mc_dropout_switches_only_dropout_and_restores_modes():
    model = build_model("resnet18", (1, 32, 32), 3).eval()
    with mc_dropout(model.head):
        assert all(layer.training for layer in model.head.modules() if isinstance(layer, nn.Dropout))
        assert not any(layer.training for layer in model.modules() if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d))
    assert not any(layer.training for layer in model.modules())


def test_mc_inference_leaves_batchnorm_statistics_unchanged():
    torch.manual_seed(0)
    model = build_model("resnet18", (1, 32, 32), 3)
    dataset = ArrayDataset("toy", np.random.default_rng(0).random((8, 32, 32)).astype(np.float32),
                           np.zeros(8, int), ("a", "b", "c"))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    pool_outputs(model, dataset, np.arange(8), {"probs_T_N_C", "probs_N_C"}, mc_samples=3)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_trunk_runs_once_per_item_with_mc_samples():
    model = build_model("cnn", (1, 12, 12), 3)
    dataset = small_dataset()
    calls = []
    model.trunk.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    pool_outputs(model, dataset, np.arange(20), {"probs_T_N_C", "probs_N_C"}, mc_samples=10, batch_size=8)
    assert sum(calls) == 20
