"""torchvision ResNet-18/50 trunks for any number of input channels, with the study's dropout head.

The built-in names ``resnet18`` and ``resnet50`` are ``torchvision:resnet18`` and ``torchvision:resnet50``
(see :mod:`activelab.models.torchvision_backbones`): the classifier is replaced by the study's head
Linear(features, 512) - BatchNorm - ReLU - Dropout(0.5) - Linear(512, C), and for ``in_channels != 3`` the
first convolution is rebuilt with the right number of input channels. Pretrained ImageNet weights come
from ``--weights PATH`` or the local torch cache (this project never downloads at run time); for other
channel counts the pretrained RGB filters are averaged and repeated, scaled by ``3 / in_channels``, so an
image whose channels are all equal gives the same response as the original network on that image
replicated to RGB.
"""

from __future__ import annotations

from pathlib import Path

from activelab.models.heads import ActiveModel
from activelab.models.surgery import adapt_first_conv, feature_width
from activelab.models.torchvision_backbones import torchvision_backbone

#: Images of this size are used only to measure the feature width (a ResNet's does not depend on it).
_PROBE_SIZE = 64


def resnet(arch: str, in_channels: int, num_classes: int, *, pretrained: bool = False,
           weights: Path | None = None) -> ActiveModel:
    """Build ``arch`` ("resnet18" or "resnet50") as a trunk plus the study's dropout head."""
    backbone = torchvision_backbone(arch, in_channels, pretrained=pretrained, weights=weights, label=arch)
    width = feature_width(backbone, (in_channels, _PROBE_SIZE, _PROBE_SIZE), arch)
    return ActiveModel.from_backbone(backbone, num_classes, feature_dim=width)


__all__ = ["adapt_first_conv", "resnet"]
