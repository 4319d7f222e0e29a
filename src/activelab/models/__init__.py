"""Models: every one a deterministic trunk followed by a head, the only stochastic part.

By name (:func:`build_model`, the CLI's ``--model-class``):

* ``cnn``: the small Gal et al. CNN; ``resnet18``, ``resnet50``: torchvision ResNets with the study's
  dropout head (any number of input channels);
* ``torchvision:NAME``: any torchvision classification network (``torchvision:resnet34``,
  ``torchvision:mobilenet_v3_small``, ...), see :mod:`activelab.models.torchvision_backbones`;
* ``timm:NAME``: any timm network (``timm:convnext_tiny``, ``timm:resnet10t.c3_in1k``, ...), with the
  optional ``models`` extra (``pip install 'activelab[models]'``), see
  :mod:`activelab.models.timm_backbones`.

The backbone's classifier is removed, the :class:`DropoutHead` of the study's ResNet (512 hidden units,
BatchNorm, dropout 0.5) is attached and the first convolution takes the images' channels. Pretrained
weights come from ``weights=PATH`` or a local cache, never from the network.

From Python, any module: :meth:`ActiveModel.from_backbone` (a feature extractor plus a fresh head),
:meth:`ActiveModel.from_classifier` (your classifier cut after a named layer, see
:mod:`activelab.models.heads`). Training modes (scratch, finetune, head): :mod:`activelab.models.modes`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from torch import nn

from activelab.errors import ConfigError
from activelab.models.cnn import small_cnn
from activelab.models.heads import ActiveModel, ClassifierHead, DropoutHead, Head
from activelab.models.modes import TRAIN_MODES, check_train_mode, set_train_mode, trainable_parameters
from activelab.models.surgery import split_at
from activelab.models.weights import check_weights_file, load_backbone_state, read_state_dict

MODELS = {
    "cnn": "the small Gal et al. (2017) CNN for 28x28 grayscale images",
    "resnet18": "torchvision ResNet-18 trunk + dropout head (any number of input channels)",
    "resnet50": "torchvision ResNet-50 trunk + dropout head, the study's main model",
    "torchvision:NAME": "any torchvision classification network + dropout head, e.g. torchvision:resnet34",
    "timm:NAME": "any timm network + dropout head, e.g. timm:convnext_tiny (pip install 'activelab[models]')",
}

#: The models built into activelab (the other entries of MODELS are forms of names).
BUILTIN = ("cnn", "resnet18", "resnet50")

_ALIASES = {"smallcnn": "cnn", "mnistcnn": "cnn"}
_SOURCES = {"timm": "timm", "torchvision": "torchvision", "tv": "torchvision"}


def check_model(name: str, input_shape: tuple[int, int, int] | None = None, *, pretrained: bool = False,
                weights: Path | str | None = None) -> str:
    """The canonical name of model ``name`` after checking it, without building it.

    Checks that the name exists (a one-sentence ConfigError with the closest name otherwise), that timm
    is installed for ``timm:`` names, that the weights file or the cached pretrained weights exist, and,
    when ``input_shape`` = (channels, height, width) is given, that the network takes such images (on
    the meta device, so no weights are made). Returns ``"cnn"``, ``"resnet18"``, ``"resnet50"``,
    ``"timm:NAME"`` or ``"torchvision:NAME"``.
    """
    source, network = _parse(name)
    if source == "timm":
        from activelab.models.timm_backbones import check_timm

        return "timm:" + check_timm(network, input_shape, pretrained=pretrained, weights=weights)
    from activelab.models.torchvision_backbones import check_torchvision

    if source == "torchvision":
        return "torchvision:" + check_torchvision(network, input_shape, pretrained=pretrained, weights=weights)
    if network == "cnn":
        if pretrained:
            raise ConfigError("the small CNN has no ImageNet weights; drop --pretrained (--weights PATH loads your own).")
        if weights is not None:
            check_weights_file(weights)
        if input_shape is not None:
            height, width = input_shape[1:]
            if min(height, width) < 8:
                raise ConfigError(f"the small CNN needs images of at least 8x8 pixels, got {height}x{width}.")
        return network
    check_torchvision(network, input_shape, pretrained=pretrained, weights=weights, label=network)
    return network


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, *, pretrained: bool = False,
                weights: Path | str | None = None) -> ActiveModel:
    """Build model ``name`` (see :func:`check_model`) for ``input_shape`` = (channels, height, width)."""
    key = check_model(name, None, pretrained=pretrained, weights=weights)
    channels, height, width = input_shape
    if key == "cnn":
        check_model(key, input_shape)
        model = small_cnn(channels, num_classes, (height, width))
        if weights is not None:
            load_trunk_weights(model, weights, label="small CNN")
        return model
    if key.startswith("timm:"):
        from activelab.models.timm_backbones import build_timm

        return build_timm(key[len("timm:"):], input_shape, num_classes, pretrained=pretrained, weights=weights)
    from activelab.models.torchvision_backbones import build_torchvision

    network = key.split(":", 1)[-1]
    return build_torchvision(network, input_shape, num_classes, pretrained=pretrained, weights=weights, label=key)


def load_trunk_weights(model: ActiveModel, weights: Path | str, *, label: str) -> None:
    """Load the trunk of ``model`` from ``weights``: a whole saved ActiveModel (its ``trunk.`` tensors, such as
    a round's ``models/round_KKK.pt``) or the trunk's own state dict. The head keeps its fresh initialisation,
    since the classes may differ."""
    state = read_state_dict(weights)
    trunk = {name[len("trunk."):]: value for name, value in state.items() if name.startswith("trunk.")}
    load_backbone_state(model.trunk, trunk or state, source=weights, label=label)


def wrap_backbone(backbone: nn.Module, num_classes: int, input_shape: tuple[int, int, int]) -> ActiveModel:
    """``backbone`` (images to features) with the study's dropout head; :meth:`ActiveModel.from_backbone`."""
    return ActiveModel.from_backbone(backbone, num_classes, input_shape)


def _parse(name: str) -> tuple[str | None, str]:
    """``(source, network)`` of a model name: ``("timm", "convnext_tiny")``, ``(None, "cnn")``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"the model name must be a non-empty string, got {name!r}.")
    prefix, separator, network = name.strip().partition(":")
    if separator:
        source = _SOURCES.get(prefix.strip().lower())
        if source is None:
            raise ConfigError(f"unknown model source '{prefix}' in '{name}'; write timm:NAME or torchvision:NAME.")
        network = network.strip().lower()
        if not network:
            raise ConfigError(f"the model '{name}' names no network after '{prefix}:'; "
                              f"write for example {source}:resnet34.")
        return source, network
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key in BUILTIN:
        return None, key
    raise ConfigError(f"unknown model '{name}'; {_suggestion(name)}")


def _suggestion(name: str) -> str:
    """``did you mean X?`` (a built-in model or a torchvision network), or the list of model forms."""
    from activelab.models.torchvision_backbones import torchvision_names

    network = name.strip().lower().replace("-", "_")
    if network in torchvision_names():
        return f"did you mean torchvision:{network}?"
    close = difflib.get_close_matches(network.replace("_", ""), BUILTIN, n=1, cutoff=0.7)
    if close:
        return f"did you mean {close[0]}?"
    close = difflib.get_close_matches(network, torchvision_names(), n=1, cutoff=0.7)
    if close:
        return f"did you mean torchvision:{close[0]}?"
    return f"choose one of: {', '.join(MODELS)}."


__all__ = ["BUILTIN", "MODELS", "TRAIN_MODES", "ActiveModel", "ClassifierHead", "DropoutHead", "Head",
           "build_model", "check_model", "check_train_mode", "set_train_mode", "split_at", "trainable_parameters",
           "wrap_backbone"]
