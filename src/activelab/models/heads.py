"""The classifier head shared by every model: the only stochastic part of the network.

``Dropout(p_in) -> Linear -> [BatchNorm1d] -> ReLU -> Dropout(p_hidden) -> Linear``. Keeping all
dropout in the head lets MC-dropout inference run the deterministic trunk once per item and only the
head T times (the study re-ran the whole ResNet T times). The hidden activation after the ReLU is the
penultimate embedding used by diversity strategies.
"""

from __future__ import annotations

import torch
from torch import nn


class DropoutHead(nn.Module):
    """A one-hidden-layer classifier head with dropout before and after the hidden layer."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, *, p_in: float = 0.0,
                 p_hidden: float = 0.5, batchnorm: bool = False):
        super().__init__()
        self.input_dropout = nn.Dropout(p_in)
        self.hidden = nn.Sequential(nn.Linear(in_features, hidden),
                                    nn.BatchNorm1d(hidden) if batchnorm else nn.Identity(), nn.ReLU())
        self.hidden_dropout = nn.Dropout(p_hidden)
        self.output = nn.Linear(hidden, num_classes)
        self.embedding_dim = hidden

    def forward_parts(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(hidden, logits)`` for trunk ``features`` (dropout follows each module's mode)."""
        hidden = self.hidden(self.input_dropout(torch.flatten(features, 1)))
        return hidden, self.output(self.hidden_dropout(hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(features)[1]


class ActiveModel(nn.Module):
    """A deterministic ``trunk`` followed by a :class:`DropoutHead`.

    ``trunk(x)`` is the backbone output (the study's 2048-d ResNet-50 features), ``head`` maps it to
    logits. Inference code relies on this split; every model in :mod:`activelab.models` is one.
    """

    def __init__(self, trunk: nn.Module, head: DropoutHead):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))
