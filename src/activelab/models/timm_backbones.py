"""timm's networks by name (``timm:NAME``) as activelab backbones; timm is the optional ``models`` extra.

Any name in ``timm.list_models()`` works, with or without a pretrained tag (``timm:convnext_tiny``,
``timm:resnet10t.c3_in1k``). The network is made by ``timm.create_model(name, num_classes=0,
in_chans=C)``, which returns pooled features; timm itself adapts the first convolution to ``C``
channels, and networks with a fixed input size (vision transformers) are made for the images' size.

Pretrained weights come from ``weights=PATH`` (a state dict of the timm network, saved with
``torch.save`` or as ``.safetensors``; its classifier may be there or not) or from the local Hugging
Face cache, where ``timm.create_model(name, pretrained=True)`` leaves them (``model.safetensors`` of
the Hub repository named in the model's pretrained config). activelab never downloads them.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType

from torch import nn

from activelab.errors import ConfigError, DatasetNotFoundError
from activelab.models.heads import ActiveModel
from activelab.models.surgery import feature_width, meta_output_shape, reason, refused
from activelab.models.weights import check_weights_file, read_state_dict

PREFIX = "timm:"

#: File names timm looks for in a Hugging Face Hub repository, in its order.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def import_timm(label: str) -> ModuleType:
    """The timm package, or a one-sentence ConfigError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"{label} needs the timm package; install it with pip install 'activelab[models]'.") from None
    return timm


def check_timm(name: str, input_shape: tuple[int, int, int] | None = None, *, pretrained: bool = False,
               weights: Path | str | None = None) -> str:
    """Check, without building it, that timm network ``name`` exists, has its weights, suits the images.

    Returns ``name``. The image-size check runs the network on the meta device (shapes only, no data).
    """
    label = PREFIX + name
    timm = import_timm(label)
    from timm.models import get_pretrained_cfg, split_model_name_tag

    architecture, tag = split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=1, cutoff=0.6)
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "see timm.list_models() for the names."
        raise ConfigError(f"unknown timm model '{name}'; {hint}")
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            tagged = timm.list_pretrained(f"{architecture}.*")
            close = difflib.get_close_matches(name, tagged, n=1, cutoff=0.0)
            hint = f"did you mean {PREFIX}{close[0]}?" if close else f"{architecture} has no pretrained tags."
            raise ConfigError(f"timm has no weights tagged '{tag}' for {architecture}; {hint}") from None
    if weights is not None:
        check_weights_file(weights)
    elif pretrained:
        cached_weights(name)
    if input_shape is not None:
        try:
            meta_output_shape(lambda: timm.create_model(name, pretrained=False, **_options(name, input_shape)),
                              tuple(input_shape))
        except ValueError as error:
            raise refused(label, tuple(input_shape), str(error)) from None
    return name


def cached_weights(name: str) -> Path:
    """The weights of ``name`` in the local Hugging Face cache; DatasetNotFoundError when they are not there."""
    label = PREFIX + name
    import_timm(label)
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name)
    repository = getattr(config, "hf_hub_id", None) if config is not None else None
    cache = Path(constants.HF_HUB_CACHE)
    if repository:
        files = (config.hf_hub_filename,) if getattr(config, "hf_hub_filename", None) else _HUB_FILES
        for file in files:
            found = try_to_load_from_cache(repository, file, cache_dir=cache)
            if isinstance(found, str):
                return Path(found)
    if not repository:
        raise ConfigError(f"timm names no pretrained weights for {label}; pass --weights PATH to a state dict "
                          "file of the network.")
    raise DatasetNotFoundError(f"no pretrained {label} weights in the Hugging Face cache {cache} (repository "
                               f"{repository}); pass --weights PATH to a state dict file of the network "
                               "(activelab does not download weights).")


def timm_backbone(name: str, input_shape: tuple[int, int, int], *, pretrained: bool = False,
                  weights: Path | str | None = None) -> nn.Module:
    """timm network ``name`` returning pooled features for images of ``input_shape``; weights loaded if asked."""
    label = PREFIX + name
    timm = import_timm(label)
    options = _options(name, input_shape)
    if not (pretrained or weights is not None):
        return timm.create_model(name, pretrained=False, **options)
    path = check_weights_file(weights) if weights is not None else cached_weights(name)
    state = read_state_dict(path)
    # A strict load: the classifier is kept at the width the file has (0 when it has none) and removed
    # after loading, so a tensor the file lacks or has in another shape is an error, never random weights.
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name)
    classifiers = config.classifier if config is not None else None
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers or ())
    saved = [state[f"{layer}.weight"] for layer in classifiers if f"{layer}.weight" in state]
    widths = [int(saved[0].shape[0])] if saved else [0, getattr(config, "num_classes", 1000) or 1000]
    problem = None
    for width in widths:
        overlay = dict(state_dict=dict(state), num_classes=width, label_offset=0)  # timm edits it in place
        try:
            model = timm.create_model(name, pretrained=True, pretrained_strict=True, pretrained_cfg_overlay=overlay,
                                      **{**options, "num_classes": width})
        except (RuntimeError, KeyError, ValueError) as error:
            problem = problem or reason(error)
            continue
        _forget_state(model)
        if width:
            model.reset_classifier(0)
        return model
    raise ConfigError(f"{path} does not hold {label} weights ({problem}).")


def build_timm(name: str, input_shape: tuple[int, int, int], num_classes: int, *, pretrained: bool = False,
               weights: Path | str | None = None) -> ActiveModel:
    """timm network ``name`` as the trunk of an :class:`ActiveModel` with the study's dropout head."""
    backbone = timm_backbone(name, input_shape, pretrained=pretrained, weights=weights)
    width = feature_width(backbone, input_shape, PREFIX + name)
    return ActiveModel.from_backbone(backbone, num_classes, feature_dim=width)


def _options(name: str, input_shape: tuple[int, int, int]) -> dict:
    """``create_model`` arguments: no classifier, the images' channels, their size for fixed-size networks."""
    from timm.models import get_pretrained_cfg

    options = {"num_classes": 0, "in_chans": int(input_shape[0])}
    config = get_pretrained_cfg(name)
    if config is not None and getattr(config, "fixed_input_size", False):
        options["img_size"] = (int(input_shape[1]), int(input_shape[2]))
    return options


def _forget_state(model: nn.Module) -> None:
    """Drop the state dict timm keeps in the model's pretrained config (a second copy of the weights)."""
    for attribute in ("pretrained_cfg", "default_cfg"):
        config = getattr(model, attribute, None)
        if isinstance(config, dict):
            config.pop("state_dict", None)


__all__ = ["PREFIX", "build_timm", "cached_weights", "check_timm", "import_timm", "timm_backbone"]
