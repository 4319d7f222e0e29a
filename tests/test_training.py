"""Training: every labelled image is trained on, no batch of one reaches BatchNorm, bars stay off stdout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activelab.data.base import ArrayDataset
from activelab.data.loading import make_loader
from activelab.models import build_model
from activelab.training import TrainSettings, fit


def toy(n: int, size: int = 32) -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset("toy", rng.random((n, size, size)).astype(np.float32), rng.integers(0, 3, n), ("a", "b", "c"))


@pytest.mark.parametrize("size, batch, expected", [(65, 64, [65]), (129, 64, [64, 65]), (128, 64, [64, 64]),
                                                   (1, 64, [1]), (66, 64, [64, 2])])
def test_training_batches_fold_a_lone_last_item_and_keep_every_item(size, batch, expected):
    loader = make_loader(toy(size, 8), np.arange(size), labels=np.zeros(size, int), batch_size=batch, shuffle_seed=3)
    for _ in range(2):  # two epochs, two permutations
        batches = [labels.numel() for _, labels in loader]
        assert batches == expected
    assert len(loader) == len(expected)


def test_inference_batches_keep_their_order_and_size():
    loader = make_loader(toy(65, 8), np.arange(65), batch_size=64)
    assert [images.shape[0] for images in loader] == [64, 1]


def test_resnet_trains_on_65_images_with_batch_64(capsys):
    torch.manual_seed(0)
    dataset = toy(80)
    model = build_model("resnet18", (1, 32, 32), 3)
    settings = TrainSettings(max_epochs=1, batch_size=64, progress=True)
    result = fit(model, dataset, np.arange(65), dataset.labels[:65], np.arange(65, 80), settings, seed=0)
    assert result.epochs == 1
    captured = capsys.readouterr()
    assert "Epoch" not in captured.out  # Lightning's bars go to stderr, stdout carries results only


def augment_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def test_augmentation_draws_are_seeded_and_independent_of_workers():
    dataset = toy(20, 8)
    def epoch(workers):
        loader = make_loader(dataset, np.arange(20), labels=dataset.labels, batch_size=6, shuffle_seed=1,
                             num_workers=workers, augment=augment_flip)
        return [images for images, _ in loader]
    alone, with_workers = epoch(0), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(alone, with_workers))
    plain = [images for images, _ in make_loader(dataset, np.arange(20), labels=dataset.labels, batch_size=6,
                                                 shuffle_seed=1)]
    assert not all(torch.equal(a, b) for a, b in zip(alone, plain))


def test_min_steps_repeats_a_small_labelled_set_until_training_reaches_them():
    torch.manual_seed(0)
    dataset = toy(60, 12)
    model = build_model("cnn", (1, 12, 12), 3)
    settings = TrainSettings(max_epochs=4, batch_size=64, min_steps=30, patience=1, progress=False)
    result = fit(model, dataset, np.arange(20), dataset.labels[:20], np.arange(20, 60), settings, seed=0)
    assert result.steps >= 30  # 20 images in batches of 64: one step per epoch without repetition
    plain = fit(build_model("cnn", (1, 12, 12), 3), dataset, np.arange(20), dataset.labels[:20], np.arange(20, 60),
                TrainSettings(max_epochs=4, batch_size=64, progress=False), seed=0)
    assert plain.steps <= 4
