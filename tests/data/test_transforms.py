"""Batch transforms: resize, normalisation and seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activelab.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Preprocess, augment, normalise, random_crop,
                                       random_flip, resize, to_tensor)


def batch(count=6, channels=3, height=8, width=10):
    return torch.arange(count * channels * height * width, dtype=torch.float32).reshape(count, channels, height,
                                                                                         width)


def test_to_tensor_scales_and_moves_channels_first():
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    tensor = to_tensor(rgb)
    assert tensor.shape == (3, 4, 5) and tensor.dtype == torch.float32
    assert tensor[2].eq(1).all() and tensor[:2].eq(0).all()
    assert to_tensor(np.full((4, 5), 51, dtype=np.uint8)).shape == (1, 4, 5)


def test_resize_changes_only_the_size():
    constant = torch.full((2, 3, 256, 256), 0.25)
    resized = resize(constant, (224, 224))
    assert resized.shape == (2, 3, 224, 224)
    torch.testing.assert_close(resized, torch.full_like(resized, 0.25))
    same = batch()
    assert resize(same, (8, 10)) is same


def test_normalise_per_channel_with_imagenet_statistics():
    ones = torch.ones(2, 3, 4, 4)
    out = normalise(ones, IMAGENET_MEAN, IMAGENET_STD)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, :, 0, 0], expected.expand(2, 3))
    torch.testing.assert_close(normalise(ones, (0.5,), (0.25,)), torch.full_like(ones, 2.0))


def test_preprocess_accepts_a_batch_or_images_of_different_sizes():
    prepare = Preprocess((6, 6), (0.5,), (0.5,))
    images = [torch.zeros(3, 10, 12), torch.ones(3, 6, 6), torch.ones(3, 3, 4)]
    out = prepare(images)
    assert out.shape == (3, 3, 6, 6)
    torch.testing.assert_close(out[0], torch.full((3, 6, 6), -1.0))
    torch.testing.assert_close(out[2], torch.full((3, 6, 6), 1.0))
    assert prepare(torch.zeros(2, 3, 12, 12)).shape == (2, 3, 6, 6)
    assert Preprocess()(torch.ones(1, 1, 5, 5)).shape == (1, 1, 5, 5)


def test_flip_follows_its_generator_and_leaves_global_rng_alone():
    images = batch(count=64)
    state = torch.random.get_rng_state()
    first = random_flip(images, torch.Generator().manual_seed(3))
    again = random_flip(images, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, again) and torch.equal(images, batch(count=64))  # input untouched
    flipped = (first != images).flatten(1).any(1)
    assert 0 < flipped.sum() < 64
    torch.testing.assert_close(first[flipped], images[flipped].flip(-1))
    assert torch.equal(random_flip(images, torch.Generator(), dim=-2, p=1.0), images.flip(-2))
    assert torch.equal(random_flip(images, torch.Generator(), p=0.0), images)


def test_random_crop_is_a_window_of_the_padded_image():
    images = batch(count=20)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    for original, crop in zip(padded, cropped):
        windows = [original[:, top:top + 8, left:left + 10] for top in range(5) for left in range(5)]
        assert any(torch.equal(crop, window) for window in windows)
    assert random_crop(images, 0, torch.Generator()) is images


@pytest.mark.parametrize("options", [{}, {"vflip": True, "crop_padding": 1}])
def test_augment_is_reproducible_from_its_seed(options):
    images = batch(count=32)
    first = augment(images, torch.Generator().manual_seed(7), **options)
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(7), **options))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(8), **options))
