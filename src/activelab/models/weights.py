"""Reading pretrained weights from a file and loading them into a backbone, with one-sentence errors.

activelab never downloads weights: they come from a file the user names (``--weights PATH``) or from a
library's local cache (see the torchvision and timm builders). A weights file is a state dict saved with
``torch.save`` (``.pth``, ``.pt``, ``.bin``, also nested under a ``"state_dict"`` or ``"model"`` key, as
training scripts often save it) or a ``.safetensors`` file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from activelab.errors import ConfigError, DatasetNotFoundError


def check_weights_file(weights: Path | str) -> Path:
    """``weights`` as a Path after checking the file exists (DatasetNotFoundError otherwise)."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"the weights file {path} does not exist.")
    return path


def read_state_dict(weights: Path | str) -> dict[str, torch.Tensor]:
    """The tensors saved in ``weights``, by name; a one-sentence error for a missing or foreign file."""
    path = check_weights_file(weights)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ConfigError(f"reading {path} needs the safetensors package; pip install safetensors.") from None
    except Exception as error:  # torch and safetensors raise many types for a bad file; all mean "not weights"
        raise ConfigError(f"{path} is not a readable PyTorch weights file ({type(error).__name__}).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(
            isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()):
        raise ConfigError(f"{path} does not hold a state dict (a mapping of layer names to tensors).")
    if all(name.startswith("module.") for name in state):  # saved from nn.DataParallel
        state = {name[len("module."):]: value for name, value in state.items()}
    return dict(state)


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: Path | str, label: str,
                        ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model``, requiring every tensor of the model and nothing else.

    Tensors whose names start with one of the prefixes in ``ignore`` (the removed classifier, auxiliary
    heads) are dropped first. BatchNorm's ``num_batches_tracked`` counters may be missing (old files).
    """
    state = {name: value for name, value in state.items() if not name.startswith(ignore)}
    expected = {name: value.shape for name, value in model.state_dict().items()}
    missing = [name for name in expected if name not in state and not name.endswith("num_batches_tracked")]
    unexpected = [name for name in state if name not in expected]
    wrong = [name for name in expected if name in state and tuple(state[name].shape) != tuple(expected[name])]
    problem = None
    if missing:
        problem = f"{len(missing)} of its {len(expected)} tensors are missing, e.g. {missing[0]}"
    elif unexpected:
        problem = f"it has {len(unexpected)} tensors the model lacks, e.g. {unexpected[0]}"
    elif wrong:
        problem = (f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)} instead of {tuple(expected[wrong[0]])}")
    if problem:
        raise ConfigError(f"{source} does not hold {label} weights ({problem}).")
    model.load_state_dict(state, strict=False)


__all__ = ["check_weights_file", "load_backbone_state", "read_state_dict"]
