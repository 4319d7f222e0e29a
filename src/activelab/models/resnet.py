"""torchvision ResNet-18/50 trunks for any number of input channels, with the study's dropout head.

For ``in_channels != 3`` the first convolution is rebuilt with the right number of input channels.
Pretrained ImageNet weights come from ``--weights PATH`` or the local torch cache (this project never
downloads at run time); for other channel counts the pretrained RGB filters are averaged and repeated,
scaled by ``3 / in_channels``, so an image whose channels are all equal gives the same response as the
original network on that image replicated to RGB.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from activelab.errors import ConfigError, DatasetNotFoundError
from activelab.models.heads import ActiveModel, DropoutHead

#: Filenames of torchvision's ImageNet weights in the torch hub cache, newest first.
CACHED_WEIGHTS = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
}


def resnet(arch: str, in_channels: int, num_classes: int, *, pretrained: bool = False,
           weights: Path | None = None) -> ActiveModel:
    """Build ``arch`` ("resnet18" or "resnet50") as a trunk plus the study's dropout head.

    The head is Linear(features, 512) - BatchNorm - ReLU - Dropout(0.5) - Linear(512, C).
    """
    backbone = getattr(torchvision.models, arch)(weights=None)
    if pretrained or weights is not None:
        backbone.load_state_dict(pretrained_state(arch, weights))
    if in_channels != 3:
        backbone.conv1 = adapt_first_conv(backbone.conv1, in_channels)
    features = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return ActiveModel(backbone, DropoutHead(features, 512, num_classes, p_hidden=0.5, batchnorm=True))


def pretrained_state(arch: str, weights: Path | None) -> dict[str, torch.Tensor]:
    """Load ImageNet weights from ``weights`` or the torch hub cache; a clear error when neither exists."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise DatasetNotFoundError(f"the weights file {path} does not exist.")
    else:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        found = [cache / name for name in CACHED_WEIGHTS[arch] if (cache / name).is_file()]
        if not found:
            raise DatasetNotFoundError(
                f"no pretrained {arch} weights in {cache}; put torchvision's {CACHED_WEIGHTS[arch][0]} there "
                "or pass --weights PATH (activelab does not download weights).")
        path = found[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file; all mean "not a weights file"
        raise ConfigError(f"{path} is not a readable PyTorch weights file ({type(error).__name__}).") from None
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ConfigError(f"{path} does not hold {arch} weights (no conv1.weight).")
    return state


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: RGB filters averaged, repeated, scaled by 3/in."""
    adapted = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        bias=conv.bias is not None)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        adapted.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            adapted.bias.copy_(conv.bias)
    return adapted
