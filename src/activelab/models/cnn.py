"""The small CNN of Gal, Islam & Ghahramani (2017) for MNIST-sized grayscale images.

conv(32, 4x4) - ReLU - conv(32, 4x4) - ReLU - maxpool(2) - dropout(0.25) - dense(128) - ReLU -
dropout(0.5) - dense(C). The two dropouts live in the head, so the convolutions form the
deterministic trunk.

References
----------
.. [1] Gal, Y., Islam, R. & Ghahramani, Z. (2017). Deep Bayesian Active Learning with Image Data. ICML.
"""

from __future__ import annotations

import torch
from torch import nn

from activelab.models.heads import ActiveModel, DropoutHead


def small_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> ActiveModel:
    """Build the Gal et al. CNN for ``in_channels`` x ``image_size`` inputs (at least 8 x 8 pixels)."""
    trunk = nn.Sequential(nn.Conv2d(in_channels, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten())
    with torch.no_grad():
        flat = trunk(torch.zeros(1, in_channels, *image_size)).shape[1]
    return ActiveModel(trunk, DropoutHead(flat, 128, num_classes, p_in=0.25, p_hidden=0.5))
