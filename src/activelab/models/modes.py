"""Training modes: what of an :class:`~activelab.models.heads.ActiveModel` a round trains.

``scratch``
    Everything trainable, from a fresh random initialisation (the caller builds a new model).
``finetune``
    Everything trainable, starting from pretrained weights (``pretrained`` or ``weights``).
``head``
    Only the head: the trunk, with pretrained weights, is frozen (:meth:`ActiveModel.freeze_trunk`):
    its parameters need no gradients and it stays in eval mode while the model trains, so its
    BatchNorm statistics do not move and an optimiser step changes no trunk tensor.

Use::

    model = set_train_mode(build_model(...), "head")
    optimiser = torch.optim.Adam(trainable_parameters(model), lr=1e-3)
"""

from __future__ import annotations

import difflib
from pathlib import Path

from torch import nn

from activelab.config import TRAIN_MODES
from activelab.errors import ConfigError
from activelab.models.heads import ActiveModel



def check_train_mode(mode: str, *, pretrained: bool = False, weights: Path | str | None = None) -> str:
    """``mode`` after checking it is a training mode and that its starting weights are given."""
    key = str(mode).strip().lower().replace("_", "-")
    key = {"fine-tune": "finetune", "frozen": "head", "linear-probe": "head"}.get(key, key)
    if key not in TRAIN_MODES:
        close = difflib.get_close_matches(key, list(TRAIN_MODES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(TRAIN_MODES)}."
        raise ConfigError(f"unknown training mode '{mode}'; {hint}")
    if key in ("finetune", "head") and not pretrained and weights is None:
        raise ConfigError(f"training mode {key} starts from pretrained weights; add --pretrained or --weights PATH.")
    return key


def set_train_mode(model: ActiveModel, mode: str) -> ActiveModel:
    """Freeze the trunk of ``model`` for ``"head"``, unfreeze it for ``"scratch"`` and ``"finetune"``."""
    key = check_train_mode(mode, pretrained=True)
    if not isinstance(model, ActiveModel):
        raise ConfigError(f"training modes apply to an ActiveModel, got {type(model).__name__}.")
    return model.freeze_trunk() if key == "head" else model.unfreeze_trunk()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` an optimiser should update (those that require gradients)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


__all__ = ["TRAIN_MODES", "check_train_mode", "set_train_mode", "trainable_parameters"]
