"""Image transforms shared by the sources, operating on whole batches of tensors.

Deterministic preprocessing (:class:`Preprocess`: resize, then per-channel normalisation) is what a
dataset's ``load`` applies, so a position always gives the same tensor. Training augmentation
(:func:`random_flip`, :func:`random_crop`, :func:`augment`) is separate and draws every random choice
from an explicit :class:`torch.Generator`, never from torch's global generator, so a run is
reproducible from its seed and a scoring pass is never perturbed.

References
----------
.. [1] Krizhevsky, A., Sutskever, I. & Hinton, G. (2012). ImageNet Classification with Deep
       Convolutional Neural Networks. NeurIPS. (Flip and crop augmentation; ImageNet channel statistics
       as used by torchvision's pretrained models.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Per-channel mean and standard deviation of ImageNet (RGB, pixels in [0, 1]); pretrained models expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The same statistics for a single grey channel (the mean over the three RGB channels).
IMAGENET_GREY_MEAN = (0.449,)
IMAGENET_GREY_STD = (0.226,)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An ``[H, W]`` or ``[H, W, C]`` uint8 image as a float32 ``[C, H, W]`` tensor in [0, 1]."""
    array = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), dtype=np.float32)).div_(255)


def resize(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a float ``[B, C, H, W]`` batch to ``size = (height, width)``, bilinear with antialiasing.

    Antialiasing makes downscaling match PIL's resampling rather than skipping pixels; a batch already
    of that size is returned unchanged.
    """
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    return F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(batch - mean) / std`` per channel of a ``[B, C, H, W]`` batch (one value broadcasts to all channels)."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype).view(-1, 1, 1)
    return (batch - mean_t) / std_t


@dataclass(frozen=True)
class Preprocess:
    """A source's deterministic transform: resize to ``size`` (None keeps it), then normalise per channel.

    Parameters
    ----------
    size : (int, int) or None
        Output ``(height, width)``.
    mean, std : tuple of float
        Per-channel statistics of pixels in [0, 1] (:data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` for
        the RGB photo datasets, so ImageNet-pretrained backbones see the inputs they were trained on).
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Transform a ``[B, C, H, W]`` batch, or a list of ``[C, H, W]`` images of possibly different sizes."""
        if isinstance(images, torch.Tensor):
            batch = images if self.size is None else resize(images, self.size)
        elif self.size is None or len({tuple(image.shape) for image in images}) == 1:
            batch = torch.stack(list(images))
            batch = batch if self.size is None else resize(batch, self.size)
        else:
            batch = torch.cat([resize(image[None], self.size) for image in images])
        return normalise(batch, self.mean, self.std)


def random_flip(batch: torch.Tensor, generator: torch.Generator, *, dim: int = -1, p: float = 0.5) -> torch.Tensor:
    """Flip each image of ``batch`` along ``dim`` (-1 horizontal, -2 vertical) with probability ``p``."""
    flip = torch.rand(batch.shape[0], generator=generator) < p
    out = batch.clone()
    out[flip] = batch[flip].flip(dim)
    return out


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by ``padding`` pixels (reflecting the border) and cut it back at a random offset."""
    if padding <= 0:
        return batch
    height, width = batch.shape[-2:]
    padded = F.pad(batch, (padding,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (batch.shape[0], 2), generator=generator).tolist()
    return torch.stack([padded[i, :, top:top + height, left:left + width] for i, (top, left) in enumerate(offsets)])


def augment(batch: torch.Tensor, generator: torch.Generator, *, hflip: bool = True, vflip: bool = False,
            crop_padding: int = 0) -> torch.Tensor:
    """Training augmentation: random horizontal/vertical flips and a random padded crop.

    Parameters
    ----------
    batch : torch.Tensor
        ``[B, C, H, W]`` float batch (already preprocessed; the input is not modified).
    generator : torch.Generator
        The only source of randomness: the same generator state gives the same output.
    hflip, vflip : bool
        Flip left-right / up-down, each with probability 1/2 (satellite patches such as DroughtWatch
        have no "up", so both flips suit them; photos usually only ``hflip``).
    crop_padding : int
        Pixels of reflected padding for the random crop (0: no crop).
    """
    if hflip:
        batch = random_flip(batch, generator, dim=-1)
    if vflip:
        batch = random_flip(batch, generator, dim=-2)
    return random_crop(batch, crop_padding, generator)
