"""Image transforms shared by the sources, on whole batches of tensors, built on torchvision's v2 functional ops.

Deterministic preprocessing (:class:`Preprocess`: resize, then per-channel normalisation) is what a
dataset's ``load`` applies, so a position always gives the same tensor. Training augmentation
(:func:`augment_batch`: random flips and padded crops) is separate and draws every random choice from
an explicit :class:`torch.Generator`, never from torch's global generator, so a run is reproducible
from its seed and a scoring pass is never perturbed.

torchvision is imported inside the functions: importing it takes about a second, which commands that
list sources or runs without decoding an image should not pay.

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
from PIL import Image

#: Per-channel mean and standard deviation of ImageNet (RGB, pixels in [0, 1]); pretrained models expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The same statistics for a single grey channel (the mean over the three RGB channels).
IMAGENET_GREY_MEAN = (0.449,)
IMAGENET_GREY_STD = (0.226,)


def to_tensor(image: np.ndarray | Image.Image) -> torch.Tensor:
    """An ``[H, W]`` or ``[H, W, C]`` uint8 array (or a PIL image) as a float32 ``[C, H, W]`` tensor in [0, 1]."""
    from torchvision.transforms.v2 import functional as TF

    if isinstance(image, np.ndarray) and not image.flags.writeable:
        image = image.copy()  # torch cannot wrap a read-only array
    return TF.to_dtype(TF.to_image(image), torch.float32, scale=True).as_subclass(torch.Tensor)


def resize(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a float ``[B, C, H, W]`` batch to ``size = (height, width)``, bilinear with antialiasing.

    Antialiasing makes downscaling match PIL's resampling rather than skipping pixels; a batch already
    of that size is returned unchanged.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(batch, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(batch - mean) / std`` per channel of a float ``[B, C, H, W]`` batch (one value broadcasts to all channels)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.normalize(batch, [float(value) for value in mean], [float(value) for value in std])


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


def augment_batch(images: torch.Tensor, generator: torch.Generator, *, flip_p: float = 0.5,
                  padding: int = 4) -> torch.Tensor:
    """Training augmentation: a random left-right flip and a random padded crop, chosen per image.

    Each image is flipped left-right with probability ``flip_p``, then padded by ``padding`` pixels on
    every side (reflecting the border, so a black background stays black) and cut back to its size at
    a random offset, i.e. shifted by up to ``padding`` pixels each way. The padding is capped at an
    eighth of the shorter side (4 for 32x32 and larger, 3 for 28x28, 1 for 8x8), so small images are not
    cut up. Every random choice is drawn from ``generator``: the same generator state gives the same
    output, and torch's global generator is left alone.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, C, H, W]`` batch of any dtype and device (not modified).
    generator : torch.Generator
        A CPU generator, the only source of randomness.
    flip_p : float
        Probability of flipping each image.
    padding : int
        Largest shift in pixels (0: no crop).

    Returns
    -------
    torch.Tensor
        A new batch of the same shape, dtype and device.
    """
    from torchvision.transforms.v2 import functional as TF

    if images.ndim != 4:
        raise ValueError(f"augment_batch expects a [B, C, H, W] batch, not a tensor of shape {tuple(images.shape)}")
    count, _, height, width = images.shape
    pad = max(0, min(padding, min(height, width) // 8))
    flips = (torch.rand(count, generator=generator) < flip_p).tolist()
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator).tolist()
    if count == 0:
        return images.clone()
    padded = TF.pad(images, [pad], padding_mode="reflect") if pad else images
    out = []
    for image, flip, (top, left) in zip(padded, flips, offsets):
        image = TF.crop(image, top, left, height, width)
        out.append(TF.horizontal_flip(image) if flip else image)
    return torch.stack(out)
