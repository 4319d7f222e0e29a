"""Consistent MC dropout: T sampled networks, each one the same for every item of the pool.

MC dropout treats each stochastic forward pass as one network drawn from the approximate posterior.
Scores that compare items *within* a pass, above all BatchBALD's joint mutual information, need pass
``t`` to be the same network for the whole pool: one dropout mask per pass and layer, shared by every
item and every loader batch (Kirsch, van Amersfoort & Gal 2019 call this *consistent* MC dropout).
Plain ``nn.Dropout`` in training mode draws a fresh mask per item instead, so ten copies of one image
get ten different scores.

:class:`ConsistentDropout` keeps every layer in eval mode (BatchNorm and the rest are untouched) and
multiplies the input of each ``nn.Dropout`` layer by the mask of the current pass. The masks are drawn
from ``(seed, layer, pass)`` alone, so they do not depend on the batch order or on what ran before.

Running a head T times costs T small matrix products per batch. :class:`StackedDropoutHead` evaluates
all T networks of activelab's :class:`~activelab.models.heads.DropoutHead` at once with the same masks:
each pass's input mask is folded into a copy of the first layer's weights (``W (x * m_t) = (W * m_t) x``),
so one matrix product ``[B, F] @ [F, T * H]`` replaces T of them, and the hidden masks multiply a
``[T, B, H]`` tensor before the output layer. Other heads keep the pass-by-pass hooks.

References
----------
.. [1] Kirsch, A., van Amersfoort, J. & Gal, Y. (2019). BatchBALD: Efficient and diverse batch
       acquisition for deep Bayesian active learning. NeurIPS (section 3.3, consistent MC dropout).
.. [2] Gal, Y. & Ghahramani, Z. (2016). Dropout as a Bayesian approximation. ICML.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from activelab.errors import ConfigError
from activelab.models.heads import DropoutHead


def dropout_layers(module: nn.Module) -> list[nn.Dropout]:
    """The element-wise ``nn.Dropout`` layers of ``module`` that drop something (``p > 0``)."""
    return [layer for layer in module.modules() if type(layer) is nn.Dropout and layer.p > 0]


class ConsistentDropout:
    """Context manager running ``module`` as one of ``n_samples`` fixed dropout networks at a time.

    Use :meth:`use` to choose the pass before each forward call::

        with ConsistentDropout(model.head, n_samples=20, seed=7) as masks:
            for t in range(20):
                masks.use(t)
                logits_t = model.head(features)

    Parameters
    ----------
    module : torch.nn.Module
        The network (or its stochastic part). It must contain at least one ``nn.Dropout`` with ``p > 0``;
        other dropout variants (channel dropout, alpha dropout) are refused rather than ignored.
    n_samples : int
        Number of passes ``T`` (at least 2: one pass carries no uncertainty).
    seed : int
        Seed of the masks; the mask of layer ``l`` in pass ``t`` depends on ``(seed, l, t)`` only.
    """

    def __init__(self, module: nn.Module, *, n_samples: int, seed: int):
        other = sorted({type(layer).__name__ for layer in module.modules()
                        if isinstance(layer, nn.modules.dropout._DropoutNd) and type(layer) is not nn.Dropout})
        if other:
            raise ConfigError(f"MC dropout supports nn.Dropout only, but the model also has {', '.join(other)}.")
        self.layers = dropout_layers(module)
        if not self.layers:
            raise ConfigError(f"MC dropout needs a dropout layer with p > 0, and {type(module).__name__} has none.")
        if n_samples < 2:
            raise ConfigError(f"MC dropout needs at least 2 samples, got {n_samples}.")
        self.module = module
        self.n_samples = n_samples
        self.seed = seed
        self.current = 0
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self._stacked: dict[int, torch.Tensor] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._modes: list[tuple[nn.Module, bool]] = []

    def use(self, sample: int) -> None:
        """Make the following forward calls use the masks of pass ``sample`` (``0 <= sample < n_samples``)."""
        if not 0 <= sample < self.n_samples:
            raise ValueError(f"pass {sample} is outside 0..{self.n_samples - 1}")
        self.current = sample

    def __enter__(self) -> "ConsistentDropout":
        self._modes = [(layer, layer.training) for layer in self.module.modules()]
        self.module.eval()
        for index, layer in enumerate(self.layers):
            self._hooks.append(layer.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc_info) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for layer, training in self._modes:
            layer.training = training

    def _hook(self, index: int):
        def apply_mask(layer: nn.Dropout, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            features = inputs[0]
            return features * self.mask(index, self.current, features.shape[1:]).to(features)

        return apply_mask

    def mask(self, layer: int, sample: int, shape: torch.Size) -> torch.Tensor:
        """The scaled keep-mask (0 or ``1 / (1 - p)``) of ``layer`` in pass ``sample`` for items of ``shape``."""
        key = (layer, sample)
        mask = self._masks.get(key)
        if mask is None:
            p = self.layers[layer].p
            state = np.random.SeedSequence([self.seed, layer, sample]).generate_state(2)
            generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            keep = torch.rand(tuple(shape), generator=generator) >= p
            mask = keep.float() / (1.0 - p) if p < 1 else torch.zeros(tuple(shape))
            self._masks[key] = mask
        elif mask.shape != shape:
            raise ValueError(f"dropout layer {layer} saw items of shape {tuple(shape)} after {tuple(mask.shape)}")
        return mask

    def stacked_mask(self, layer: nn.Dropout, shape: torch.Size) -> torch.Tensor | None:
        """The masks of ``layer`` for every pass, ``[T, *shape]``, or None if ``layer`` drops nothing."""
        index = next((position for position, known in enumerate(self.layers) if known is layer), None)
        if index is None:
            return None
        stacked = self._stacked.get(index)
        if stacked is None or stacked.shape[1:] != shape:    # a new shape: mask() refuses it
            stacked = torch.stack([self.mask(index, sample, shape) for sample in range(self.n_samples)])
            self._stacked[index] = stacked
        return stacked


#: Largest gathered first-layer weight of one group of passes (elements); see :class:`StackedDropoutHead`.
GROUP_ELEMENTS = 2**22
#: The gathered weights of every group are kept for the whole pool while they hold at most this many
#: elements (64 MiB in float32), and gathered again for each batch otherwise.
KEEP_ELEMENTS = 2**24


class StackedDropoutHead:
    """The ``T`` fixed dropout networks of a :class:`DropoutHead`, evaluated together in one call.

    Calling it on trunk features ``[B, ...]`` returns the logits ``[T, B, C]`` that ``T`` hooked passes with
    the masks of ``masks`` give (pass ``t`` uses :meth:`ConsistentDropout.mask` of ``(seed, layer, t)``),
    up to float round-off. Use :meth:`supports` to know whether a head qualifies; the head must be in eval
    mode. For inference only (no gradients).

    The first layer is most of the head's work. With input mask ``m_t`` (0 or ``s = 1 / (1 - p)`` per
    feature), kept features ``K_t`` and dropped features ``D_t``,
    ``W (x * m_t) = s W[:, K_t] x[K_t] = s W x - s W[:, D_t] x[D_t]``: each pass needs only the smaller of
    the two feature sets (a fraction ``min(p, 1 - p)`` of them), gathered into one batched product, on
    top of one shared ``W x`` when the dropped set is used. For the small CNN (``p = 0.25``, T = 20) that
    is ``1 + 0.25 T = 6`` instead of 20 full products. The gathered weight columns are built once per
    pool (in groups of passes of at most :data:`GROUP_ELEMENTS`, kept while they fit
    :data:`KEEP_ELEMENTS`); the hidden masks multiply a ``[T, B, H]`` tensor before one output product.

    Parameters
    ----------
    head : DropoutHead
        The head, as built by activelab (``Linear -> BatchNorm1d or Identity -> ReLU`` between the dropouts).
    masks : ConsistentDropout
        The masks of the passes, drawn for ``head``.
    """

    def __init__(self, head: DropoutHead, masks: ConsistentDropout):
        if not self.supports(head, masks):
            raise ValueError(f"{type(head).__name__} cannot run its MC passes stacked; use the hooked passes.")
        self.head = head
        self.masks = masks
        self._kept_groups: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @staticmethod
    def supports(head: nn.Module, masks: ConsistentDropout) -> bool:
        """Whether ``head`` is exactly activelab's :class:`DropoutHead` layout and ``masks`` were drawn for it.

        Subclasses (which may change ``forward``), rebuilt hidden blocks and BatchNorm that normalises with
        batch statistics in eval mode all fall back to the hooked passes.
        """
        if type(head) is not DropoutHead or masks.module is not head or head.training:
            return False
        layers = list(head.hidden)
        if len(layers) != 3 or type(layers[0]) is not nn.Linear or type(layers[2]) is not nn.ReLU:
            return False
        norm = layers[1]
        if type(norm) is nn.BatchNorm1d:
            return norm.track_running_stats and norm.running_mean is not None
        return type(norm) is nn.Identity

    @torch.no_grad()
    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[T, B, C]`` of the ``T`` passes on trunk ``features`` ``[B, ...]``."""
        head, n_passes = self.head, self.masks.n_samples
        inputs = torch.flatten(features, 1)
        n_items, width = inputs.shape[0], head.hidden[0].out_features
        input_masks = self.masks.stacked_mask(head.input_dropout, inputs.shape[1:])
        if input_masks is None:     # no input dropout: the first layer is the same in every pass
            pre = head.hidden[0](inputs).expand(n_passes, n_items, width)
        else:
            pre = self._first_layer(inputs, input_masks)
        hidden = head.hidden[1:](pre.reshape(n_passes * n_items, width)).view(n_passes, n_items, width)
        hidden_masks = self.masks.stacked_mask(head.hidden_dropout, hidden.shape[2:])
        if hidden_masks is not None:
            hidden = hidden * hidden_masks.to(hidden)[:, None, :]
        return head.output(hidden)

    def _first_layer(self, inputs: torch.Tensor, input_masks: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[T, B, H]`` of the first layer for inputs ``[B, F]`` under each pass's input mask."""
        linear = self.head.hidden[0]
        input_masks = input_masks.to(inputs.device)
        scale = float(input_masks.max())        # s = 1 / (1 - p) as the hooked passes multiply it (0 if p = 1)
        use_dropped = self.head.input_dropout.p < 0.5
        bias = linear.bias if linear.bias is not None else inputs.new_zeros(linear.out_features)
        shared = torch.addmm(bias, inputs, linear.weight.T, alpha=scale) if use_dropped else bias
        parts = []
        for index, weights in self._gathered(input_masks, use_dropped):
            gathered = inputs.index_select(1, index.flatten()).view(inputs.shape[0], *index.shape).transpose(0, 1)
            start = shared.expand(index.shape[0], inputs.shape[0], linear.out_features)
            parts.append(torch.baddbmm(start, gathered, weights, alpha=-scale if use_dropped else scale))
        return torch.cat(parts)

    def _gathered(self, input_masks: torch.Tensor, use_dropped: bool) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Per group of passes: feature indices ``[t, S]`` and the first layer's weight rows ``[t, S, H]``.

        Row ``j`` of pass ``i`` is the weight column of feature ``index[i, j]``, one of the pass's dropped
        (or kept) features; a pass with fewer than ``S`` of them is padded with other features whose rows
        are zero, so they add nothing.
        """
        if self._kept_groups is not None:
            return self._kept_groups
        chosen = (input_masks == 0) if use_dropped else (input_masks != 0)
        width = int(chosen.sum(1).max())
        weight_F_H = self.head.hidden[0].weight.T
        groups = self._groups(chosen, width, weight_F_H)
        if chosen.shape[0] * width * weight_F_H.shape[1] <= KEEP_ELEMENTS:
            self._kept_groups = list(groups)
            return self._kept_groups
        return groups

    @staticmethod
    def _groups(chosen: torch.Tensor, width: int,
                weight_F_H: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = max(1, GROUP_ELEMENTS // max(1, width * weight_F_H.shape[1]))
        for part in chosen.split(size):
            index = torch.sort(part.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :width]
            valid = torch.gather(part, 1, index)
            yield index, weight_F_H[index] * valid[..., None].to(weight_F_H)


__all__ = ["ConsistentDropout", "StackedDropoutHead", "dropout_layers"]
