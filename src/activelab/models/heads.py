"""The model every strategy sees: a deterministic trunk and a head, the only stochastic part.

``Dropout(p_in) -> Linear -> [BatchNorm1d] -> ReLU -> Dropout(p_hidden) -> Linear`` is the
:class:`DropoutHead` that activelab attaches to every backbone. Keeping all dropout in the head lets
MC-dropout inference run the deterministic trunk once per item and only the head T times (the study
re-ran the whole ResNet T times). The hidden activation after the ReLU is the penultimate embedding used
by diversity strategies.

Any model can become an :class:`ActiveModel`:

* a backbone that returns features (a torchvision or timm network without its classifier, your own
  feature extractor): ``ActiveModel.from_backbone(backbone, num_classes, input_shape)`` attaches a
  fresh :class:`DropoutHead`;
* a classifier you already have, with its own output layers: ``ActiveModel.from_classifier(model,
  "avgpool", input_shape)`` cuts it right after the named layer with ``torch.fx`` (see
  :func:`activelab.models.surgery.split_at`). The trunk is everything up to and including that layer,
  the head (:class:`ClassifierHead`) is the rest of *your* model, and the embedding is the flattened
  output of the named layer, so name a pooled layer for a compact embedding. MC dropout needs an
  ``nn.Dropout`` after the cut (dropout written as ``F.dropout`` in ``forward`` is invisible to it);
  without one the other strategies still work. A model fx cannot trace has to be split by hand:
  ``ActiveModel(trunk, ClassifierHead(rest, embedding_dim))``;
* a classifier whose own output layers you do not want: cut it and attach a fresh head,
  ``ActiveModel.from_backbone(split_at(model, "avgpool")[0], num_classes, input_shape)``.

Training only the head on top of a frozen trunk is :meth:`ActiveModel.freeze_trunk`: the trunk's
parameters stop requiring gradients and the trunk stays in eval mode whenever the model is put in
training mode, so BatchNorm statistics and dropout in the trunk do not change either
(:mod:`activelab.models.modes` names the three training modes).
"""

from __future__ import annotations

import torch
from torch import nn

from activelab.errors import ConfigError
from activelab.models.surgery import evaluation, feature_width, features_width, probe, split_at


class Head(nn.Module):
    """What inference needs from a head: ``forward_parts(features) -> (embedding, logits)``, ``embedding_dim``."""

    embedding_dim: int

    def forward_parts(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(features)[1]


class DropoutHead(Head):
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


class ClassifierHead(Head):
    """The output layers of a user's classifier used as the head; the embedding is the flattened input.

    Parameters
    ----------
    module : torch.nn.Module
        Maps trunk features to logits ``[N, C]``.
    embedding_dim : int
        Number of trunk features per item (the flattened width of the trunk's output).
    """

    def __init__(self, module: nn.Module, embedding_dim: int):
        super().__init__()
        self.module = module
        self.embedding_dim = embedding_dim

    def forward_parts(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.flatten(features, 1), self.module(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features)


class ActiveModel(nn.Module):
    """A deterministic ``trunk`` followed by a :class:`Head` (usually a :class:`DropoutHead`).

    ``trunk(x)`` is the backbone output (the study's 2048-d ResNet-50 features), ``head`` maps it to
    logits. Inference code relies on this split; every model in :mod:`activelab.models` is one.
    """

    def __init__(self, trunk: nn.Module, head: Head):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.trunk_frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))

    # ------------------------------------------------------------------------------ freezing the trunk

    def freeze_trunk(self) -> "ActiveModel":
        """Train only the head: trunk parameters need no gradients and the trunk stays in eval mode.

        After this, ``model.train()`` puts the head in training mode and leaves the trunk in eval mode, so
        neither an optimiser step nor a forward pass changes any trunk parameter or buffer (BatchNorm
        running statistics included). Returns the model.
        """
        self.trunk_frozen = True
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        return self

    def unfreeze_trunk(self) -> "ActiveModel":
        """Train everything again: every trunk parameter needs gradients, the trunk follows the model's mode."""
        self.trunk_frozen = False
        self.trunk.requires_grad_(True)
        self.trunk.train(self.training)
        return self

    def train(self, mode: bool = True) -> "ActiveModel":
        super().train(mode)
        if self.trunk_frozen:
            self.trunk.eval()
        return self

    # ------------------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, backbone: nn.Module, num_classes: int, input_shape: tuple[int, int, int] | None = None,
                      *, feature_dim: int | None = None, hidden: int = 512, p_in: float = 0.0,
                      p_hidden: float = 0.5, batchnorm: bool = True) -> "ActiveModel":
        """``backbone`` as the trunk, followed by a fresh :class:`DropoutHead`.

        Parameters
        ----------
        backbone : torch.nn.Module
            Maps images ``[N, C, H, W]`` to features ``[N, D]`` (or ``[N, ...]``, flattened by the head),
            deterministically in eval mode. It becomes the trunk as it is (no copy).
        num_classes : int
            Number of classes the head predicts.
        input_shape : tuple of int, optional
            ``(channels, height, width)`` of the images; the feature width ``D`` is found by running the
            backbone (in eval mode, without gradients) on two blank images of this shape.
        feature_dim : int, optional
            ``D`` itself, instead of ``input_shape``.
        hidden, p_in, p_hidden, batchnorm
            The head's hidden width, input and hidden dropout, and BatchNorm after the hidden layer; the
            defaults are the study's ResNet head (512 units, BatchNorm, dropout 0.5).
        """
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"the backbone must be a torch.nn.Module, got {type(backbone).__name__}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
        if feature_dim is None:
            if input_shape is None:
                raise ConfigError("from_backbone needs input_shape (or feature_dim) to know the feature width.")
            feature_dim = feature_width(backbone, input_shape, "the backbone")
        return cls(backbone, DropoutHead(int(feature_dim), hidden, num_classes, p_in=p_in, p_hidden=p_hidden,
                                         batchnorm=batchnorm))

    @classmethod
    def from_classifier(cls, model: nn.Module, embedding_layer: str,
                        input_shape: tuple[int, int, int]) -> "ActiveModel":
        """A classifier cut after ``embedding_layer``: trunk up to that layer, the rest of the model as head.

        The model's own output layers stay (their weights are shared, not copied); the embedding
        strategies see the flattened output of ``embedding_layer``. See the module docstring for what
        can be cut and for MC dropout.

        Parameters
        ----------
        model : torch.nn.Module
            A classifier mapping images ``[N, C, H, W]`` to logits ``[N, num_classes]``.
        embedding_layer : str
            Dotted name of the layer whose output is the embedding (``"avgpool"`` of a torchvision ResNet).
        input_shape : tuple of int
            ``(channels, height, width)`` of the images, to check the cut and find the embedding width.
        """
        trunk, rest = split_at(model, embedding_layer)
        features = probe(trunk, input_shape, f"{type(model).__name__} up to '{embedding_layer}'")
        width = features_width(features, f"layer '{embedding_layer}'")
        with evaluation(rest):
            logits = rest(features)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"the model must return logits of shape [N, classes], but returns {shape}.")
        return cls(trunk, ClassifierHead(rest, width))


__all__ = ["ActiveModel", "ClassifierHead", "DropoutHead", "Head"]
