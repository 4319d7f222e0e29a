"""Inference: consistent MC dropout touches only dropout, the trunk runs once, results do not depend on batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from activelab.data.base import ArrayDataset
from activelab.errors import ConfigError
from activelab.inference import pool_outputs
from activelab.mcdropout import ConsistentDropout
from activelab.strategies import registry
from activelab.training import TrainSettings, fit
from activelab.models import build_model


def small_dataset(n=37):
    rng = np.random.default_rng(0)
    return ArrayDataset("toy", rng.random((n, 12, 12)).astype(np.float32), rng.integers(0, 3, n), ("a", "b", "c"))


def test_outputs_match_the_model_and_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3).eval()
    dataset = small_dataset()
    positions = np.array([5, 1, 30, 2, 2, 17])
    wanted = {"probs_N_C", "emb_N_D", "logits_N_C", "act_mean_N_L", "act_max_N_L", "grad_emb_N_D", "probs_T_N_C"}
    small = pool_outputs(model, dataset, positions, wanted, batch_size=2, mc_samples=4, seed=9)
    large = pool_outputs(model, dataset, positions, wanted, batch_size=64, mc_samples=4, seed=9)
    with torch.no_grad():
        expected = torch.softmax(model(dataset.load(positions)), 1).numpy()
    np.testing.assert_allclose(small["probs_N_C"], expected, atol=1e-5)
    for name in wanted:
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


def test_layer_activations_are_the_mean_and_the_max_of_each_layer():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3).eval()
    dataset = small_dataset()
    outputs = pool_outputs(model, dataset, np.arange(5), {"act_mean_N_L", "act_max_N_L"})
    with torch.no_grad():
        features = model.trunk(dataset.load(np.arange(5)))
        hidden, logits = model.head.forward_parts(features)
    layers = [features.flatten(1), hidden, logits]
    np.testing.assert_allclose(outputs["act_mean_N_L"], torch.stack([x.mean(1) for x in layers], 1), atol=1e-6)
    np.testing.assert_allclose(outputs["act_max_N_L"], torch.stack([x.max(1).values for x in layers], 1), atol=1e-6)


def copies_and_distinct_items():
    """A pool of 10 copies of one image followed by 30 distinct images."""
    rng = np.random.default_rng(3)
    images = rng.random((31, 12, 12)).astype(np.float32)
    images = np.concatenate([np.repeat(images[:1], 10, axis=0), images[1:]])
    return ArrayDataset("copies", images, np.zeros(40, int), ("a", "b", "c"))


def test_consistent_mc_dropout_gives_identical_images_identical_samples_in_every_batch():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 3)
    probs = pool_outputs(model, copies_and_distinct_items(), np.arange(40), {"probs_T_N_C"}, mc_samples=8,
                         batch_size=3, seed=4)["probs_T_N_C"]
    np.testing.assert_array_equal(probs[:, :10], np.repeat(probs[:, :1], 10, axis=1))
    bald = registry()["bald"](40, rng=np.random.default_rng(0), probs_T_N_C=probs)
    copy_scores = bald.scores[bald.positions < 10]
    assert np.ptp(copy_scores) == 0


def test_batchbald_takes_at_most_one_copy_of_an_image_from_a_trained_model(fashion):
    """Ten copies of the pool's highest-BALD image among 499 others: a batch of 6 takes one copy at most.

    With a fresh dropout mask per item (the study, and activelab before consistent MC dropout) the
    copies got BALD scores from 0.34 to 0.58 and BatchBALD took 2 or 3 of them for every mask seed.
    """
    torch.manual_seed(0)
    model = build_model("cnn", fashion.input_shape, fashion.num_classes)
    labelled = np.arange(300)
    fit(model, fashion, labelled, fashion.labels[labelled], np.arange(300, 500),
        TrainSettings(max_epochs=15, progress=False), seed=0)
    pool = np.arange(1000, 1500)
    probs = pool_outputs(model, fashion, pool, {"probs_T_N_C"}, mc_samples=20, seed=1)["probs_T_N_C"]
    top = registry()["bald"](1, rng=np.random.default_rng(0), probs_T_N_C=probs).positions[0]
    positions = np.concatenate([np.full(10, pool[top]), np.delete(pool, top)])
    for seed in range(3):
        probs = pool_outputs(model, fashion, positions, {"probs_T_N_C"}, mc_samples=20, seed=seed,
                             batch_size=64)["probs_T_N_C"]
        bald = registry()["bald"](positions.size, rng=np.random.default_rng(0), probs_T_N_C=probs)
        assert np.ptp(bald.scores[bald.positions < 10]) == 0
        batch = registry()["batchbald"](6, rng=np.random.default_rng(0), probs_T_N_C=probs)
        assert (batch.positions < 10).sum() <= 1


def test_consistent_dropout_leaves_every_mode_and_batchnorm_as_it_was():
    model = build_model("resnet18", (1, 32, 32), 3).eval()
    model.head.hidden_dropout.train()
    modes = [layer.training for layer in model.modules()]
    with ConsistentDropout(model.head, n_samples=3, seed=0):
        assert not any(layer.training for layer in model.modules())
    assert [layer.training for layer in model.modules()] == modes


def test_consistent_dropout_refuses_one_sample_and_a_model_without_dropout():
    with pytest.raises(ConfigError, match="at least 2 samples"):
        ConsistentDropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)), n_samples=1, seed=0)
    with pytest.raises(ConfigError, match="needs a dropout layer"):
        ConsistentDropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)), n_samples=4, seed=0)


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
