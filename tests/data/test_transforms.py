"""Batch transforms (torchvision v2 ops): resize, normalisation and seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from activelab.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Preprocess, augment_batch, normalise, resize,
                                       to_tensor)


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


def test_torchvision_ops_match_the_hand_written_formulas():
    images = torch.rand(3, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    reference = torch.nn.functional.interpolate(images, size=(24, 30), mode="bilinear", align_corners=False,
                                                antialias=True)
    torch.testing.assert_close(resize(images, (24, 30)), reference, rtol=0, atol=1e-6)
    mean, std = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1), torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    torch.testing.assert_close(normalise(images, IMAGENET_MEAN, IMAGENET_STD), (images - mean) / std)
    pixels = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255)
    torch.testing.assert_close(to_tensor(pixels), expected, rtol=0, atol=1e-7)
    assert type(to_tensor(pixels)) is torch.Tensor  # a plain tensor, not a torchvision tv_tensor
    read_only = np.asarray(Image.new("RGB", (5, 4), (255, 0, 51)))
    torch.testing.assert_close(to_tensor(read_only)[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    torch.testing.assert_close(to_tensor(Image.new("L", (5, 4), 255)), torch.ones(1, 4, 5))


# ------------------------------------------------------------------------------------- augmentation


def test_augment_batch_is_reproducible_from_its_seed_and_leaves_the_rest_alone():
    images = batch(count=32, height=28, width=28)
    state = torch.random.get_rng_state()
    first = augment_batch(images, torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global generator is not used
    assert torch.equal(first, augment_batch(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment_batch(images, torch.Generator().manual_seed(8)))
    assert torch.equal(images, batch(count=32, height=28, width=28))  # the input is not modified


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_augment_batch_keeps_shape_and_dtype(dtype):
    images = (batch(count=5, channels=1, height=28, width=28) % 256).to(dtype)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == dtype
    assert augment_batch(images[:0], torch.Generator()).shape == (0, 1, 28, 28)


def test_augment_batch_is_a_window_of_the_reflected_image_flipped_or_not():
    images = batch(count=40, height=32, width=40)
    out = augment_batch(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4), mode="reflect")
    choices = set()
    for original, result in zip(padded, out):
        for flip in (False, True):
            source = original.flip(-1) if flip else original
            for top in range(9):
                for left in range(9):
                    if torch.equal(result, source[:, top:top + 32, left:left + 40]):
                        choices.add((flip, top, left))
    assert len({flip for flip, _, _ in choices}) == 2  # some images flipped, some not
    assert len(choices) > 20  # the choices differ from image to image


def test_flips_actually_flip_and_nothing_else_is_identity():
    images = batch(count=64, height=28, width=28)
    flipped = augment_batch(images, torch.Generator().manual_seed(3), flip_p=1.0, padding=0)
    assert torch.equal(flipped, images.flip(-1))
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(3), flip_p=0.0, padding=0), images)
    some = augment_batch(images, torch.Generator().manual_seed(3), padding=0)
    changed = (some != images).flatten(1).any(1)
    assert 10 < changed.sum() < 54
    assert torch.equal(some[changed], images[changed].flip(-1))


def test_padding_is_capped_for_small_images():
    digits = batch(count=200, channels=1, height=8, width=8)
    out = augment_batch(digits, torch.Generator().manual_seed(0), flip_p=0.0)
    padded = torch.nn.functional.pad(digits, (1, 1, 1, 1), mode="reflect")  # at most 8 // 8 = 1 pixel
    for original, result in zip(padded, out):
        assert any(torch.equal(result, original[:, top:top + 8, left:left + 8]) for top in range(3)
                   for left in range(3))


def test_augment_batch_needs_a_batch():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] batch"):
        augment_batch(torch.zeros(3, 8, 8), torch.Generator())
