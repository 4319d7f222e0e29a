"""torchvision's classification networks by name (``torchvision:NAME``) as activelab backbones.

Any name in ``torchvision.models.list_models(module=torchvision.models)`` works (``resnet34``,
``mobilenet_v3_small``, ``convnext_tiny``, ``efficientnet_b0``, ``vit_b_16``, ...). The network's output
layer, its last ``Linear`` (or ``Conv2d``, for SqueezeNet) that maps to the 1000 ImageNet classes, is
replaced by ``nn.Identity``, so the backbone returns the features that layer received; auxiliary
classifiers (GoogLeNet, Inception v3) are removed. Layers before the output layer stay in the trunk as
they are (the dropout of MobileNet's or VGG's classifier acts while training only, so the trunk is
deterministic in eval mode, as inference runs it). The first convolution is adapted to the images'
channels (:func:`activelab.models.surgery.adapt_first_conv`: pretrained RGB filters averaged, repeated
and rescaled).

Pretrained weights come from ``weights=PATH`` (a state dict of the torchvision network, its classifier
may be there or not) or from the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/<file>``, where
``<file>`` is the name torchvision's weights enum gives the file (``resnet34-b627a593.pth``); activelab
never downloads them.
"""

from __future__ import annotations

import difflib
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torchvision
from torch import nn

from activelab.errors import ConfigError, DatasetNotFoundError
from activelab.models.heads import ActiveModel
from activelab.models.surgery import (adapt_input_channels, feature_width, first_conv, meta_output_shape,
                                      output_layer, refused, set_module)
from activelab.models.weights import check_weights_file, load_backbone_state, read_state_dict

PREFIX = "torchvision:"

#: Auxiliary classifiers, used only while training GoogLeNet and Inception v3 in torchvision's recipe.
_AUXILIARY = ("aux1", "aux2", "AuxLogits")


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """The names of torchvision's image classification networks."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def weight_files(name: str) -> list[str]:
    """File names of torchvision's pretrained weights for ``name`` in the hub cache, the default first."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        return []
    members = [enum.DEFAULT] + [member for member in enum if member is not enum.DEFAULT]
    files = [member.url.rsplit("/", 1)[-1] for member in members]
    return list(dict.fromkeys(files))


def cached_weights(name: str, label: str) -> Path:
    """The cached torchvision weights file for ``name``; DatasetNotFoundError saying where to put it."""
    files = weight_files(name)
    if not files:
        raise ConfigError(f"torchvision has no pretrained weights for {label}; pass --weights PATH to your own.")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for file in files:
        if (cache / file).is_file():
            return cache / file
    raise DatasetNotFoundError(f"no pretrained {label} weights in {cache}; put torchvision's {files[0]} there "
                               "or pass --weights PATH (activelab does not download weights).")


def check_torchvision(name: str, input_shape: tuple[int, int, int] | None = None, *, pretrained: bool = False,
                      weights: Path | str | None = None, label: str | None = None) -> str:
    """Check, without building it, that torchvision network ``name`` exists, has its weights, suits the images.

    Returns ``name``. The image-size check runs the network on the meta device (shapes only, no data).
    """
    label = label or PREFIX + name
    if name not in torchvision_names():
        close = difflib.get_close_matches(name, torchvision_names(), n=1, cutoff=0.6)
        hint = (f"did you mean {PREFIX}{close[0]}?" if close
                else "see torchvision.models.list_models(module=torchvision.models) for the names.")
        raise ConfigError(f"unknown torchvision model '{name}'; {hint}")
    if weights is not None:
        check_weights_file(weights)
    elif pretrained:
        cached_weights(name, label)
    if input_shape is not None:
        try:
            meta_output_shape(lambda: _skeleton(name, int(input_shape[0])), tuple(input_shape))
        except ValueError as error:
            raise refused(label, tuple(input_shape), str(error)) from None
    return name


def torchvision_backbone(name: str, in_channels: int, *, pretrained: bool = False,
                         weights: Path | str | None = None, label: str | None = None) -> nn.Module:
    """torchvision network ``name`` without its classifier, for ``in_channels``-channel images.

    With ``pretrained`` or ``weights``, the weights are loaded before the first convolution is adapted.
    """
    label = label or PREFIX + name
    model, ignore = _skeleton_parts(name)
    if pretrained or weights is not None:
        path = check_weights_file(weights) if weights is not None else cached_weights(name, label)
        state = read_state_dict(path)
        conv_name, conv = first_conv(model)
        saved = state.get(conv_name + ".weight")
        if saved is not None and saved.dim() == 4 and saved.shape[1] == in_channels != conv.in_channels:
            adapt_input_channels(model, in_channels)  # the file was saved from an adapted network
        load_backbone_state(model, state, source=path, label=label, ignore=ignore)
        if hasattr(model, "transform_input"):  # GoogLeNet/Inception weights expect torchvision's own input shift
            model.transform_input = in_channels == 3
    adapt_input_channels(model, in_channels)
    return model


def build_torchvision(name: str, input_shape: tuple[int, int, int], num_classes: int, *, pretrained: bool = False,
                      weights: Path | str | None = None, label: str | None = None) -> ActiveModel:
    """torchvision network ``name`` as the trunk of an :class:`ActiveModel` with the study's dropout head."""
    label = label or PREFIX + name
    backbone = torchvision_backbone(name, int(input_shape[0]), pretrained=pretrained, weights=weights, label=label)
    width = feature_width(backbone, input_shape, label)
    return ActiveModel.from_backbone(backbone, num_classes, feature_dim=width)


def _skeleton_parts(name: str) -> tuple[nn.Module, tuple[str, ...]]:
    """The network with random weights, no auxiliary heads, its output layer an Identity; prefixes removed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*default weight initialization.*")
        model = torchvision.models.get_model(name, weights=None)
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attribute in _AUXILIARY:
            if getattr(model, attribute, None) is not None:
                setattr(model, attribute, None)
    classifier, _ = output_layer(model)
    set_module(model, classifier, nn.Identity())
    return model, (classifier + ".", *(attribute + "." for attribute in _AUXILIARY))


def _skeleton(name: str, in_channels: int) -> nn.Module:
    model, _ = _skeleton_parts(name)
    adapt_input_channels(model, in_channels)
    return model


__all__ = ["PREFIX", "build_torchvision", "cached_weights", "check_torchvision", "torchvision_backbone",
           "torchvision_names", "weight_files"]
