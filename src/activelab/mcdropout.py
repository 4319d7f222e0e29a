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

References
----------
.. [1] Kirsch, A., van Amersfoort, J. & Gal, Y. (2019). BatchBALD: Efficient and diverse batch
       acquisition for deep Bayesian active learning. NeurIPS (section 3.3, consistent MC dropout).
.. [2] Gal, Y. & Ghahramani, Z. (2016). Dropout as a Bayesian approximation. ICML.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from activelab.errors import ConfigError


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


__all__ = ["ConsistentDropout", "dropout_layers"]
