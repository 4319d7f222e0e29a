"""Models: the small Gal et al. CNN and torchvision ResNets, each a deterministic trunk + dropout head."""

from __future__ import annotations

from pathlib import Path

from activelab.errors import ConfigError
from activelab.models.cnn import small_cnn
from activelab.models.heads import ActiveModel, DropoutHead
from activelab.models.resnet import resnet

MODELS = {
    "cnn": "the small Gal et al. (2017) CNN for 28x28 grayscale images",
    "resnet18": "torchvision ResNet-18 trunk + dropout head (any number of input channels)",
    "resnet50": "torchvision ResNet-50 trunk + dropout head, the study's main model",
}


def check_model(name: str, input_shape: tuple[int, int, int], *, pretrained: bool = False,
                weights: Path | None = None) -> str:
    """Return the registered key of model ``name`` after checking it suits ``input_shape``, without building it."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"smallcnn": "cnn", "mnistcnn": "cnn"}.get(key, key)
    if key not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}.")
    if key == "cnn":
        if pretrained or weights is not None:
            raise ConfigError("the small CNN has no pretrained weights; drop --pretrained/--weights.")
        height, width = input_shape[1:]
        if min(height, width) < 8:
            raise ConfigError(f"the small CNN needs images of at least 8x8 pixels, got {height}x{width}.")
    return key


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, *, pretrained: bool = False,
                weights: Path | None = None) -> ActiveModel:
    """Build the model registered as ``name`` for ``input_shape`` = (channels, height, width)."""
    key = check_model(name, input_shape, pretrained=pretrained, weights=weights)
    channels, height, width = input_shape
    if key == "cnn":
        return small_cnn(channels, num_classes, (height, width))
    return resnet(key, channels, num_classes, pretrained=pretrained, weights=weights)


__all__ = ["MODELS", "ActiveModel", "DropoutHead", "build_model", "check_model"]
