"""Chunked inference over a pool: probabilities, MC-dropout samples, embeddings, activations, gradients.

One pass over the pool computes everything a strategy asked for. Per batch the deterministic trunk runs
once; the head runs once in eval mode (probabilities, penultimate embedding, layer activations) and,
when MC samples are needed, as T fixed dropout networks (:class:`ConsistentDropout`: one mask per pass
shared by every item of the pool, drawn once per call from ``seed``). activelab's own
:class:`~activelab.models.heads.DropoutHead` runs the T networks at once (:class:`StackedDropoutHead`,
one matrix product per layer instead of T); any other head runs T times with the same masks. BatchNorm
and every other layer stay in eval mode, so inference never changes the model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from activelab.data.base import Dataset
from activelab.data.loading import make_loader
from activelab.faults import crash_point
from activelab.mcdropout import ConsistentDropout, StackedDropoutHead
from activelab.models.heads import ActiveModel

#: Inputs this module computes in one pass over the pool (see ``activelab.strategies.INPUTS``).
POOL_OUTPUTS = ("probs_N_C", "probs_T_N_C", "emb_N_D", "logits_N_C", "act_mean_N_L", "act_max_N_L",
                "grad_emb_N_D")


@torch.no_grad()
def pool_outputs(model: ActiveModel, dataset: Dataset, positions: np.ndarray, wanted: set[str], *,
                 mc_samples: int = 10, batch_size: int = 256, device: torch.device | str = "cpu",
                 num_workers: int = 0, seed: int = 0, progress: bool = False,
                 description: str = "scoring pool") -> dict[str, np.ndarray]:
    """Compute the ``wanted`` outputs (names from :data:`POOL_OUTPUTS`) for the items at ``positions``.

    ``seed`` fixes the dropout masks of the MC passes: pass ``t`` is the same network for every item,
    whatever the batch size, so identical images get identical samples.
    """
    unknown = set(wanted) - set(POOL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown pool outputs {sorted(unknown)}")
    model = model.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    mc_passes = _mc_passes(model, mc_samples, seed) if "probs_T_N_C" in wanted else None
    loader = make_loader(dataset, positions, batch_size=batch_size, num_workers=num_workers)
    for images in tqdm(loader, desc=description, total=len(loader), disable=not progress, leave=False):
        features = model.trunk(images.to(device))
        hidden, logits = model.head.forward_parts(features)
        probs = torch.softmax(logits.double(), dim=1)
        if "probs_N_C" in wanted:
            parts["probs_N_C"].append(probs.float().cpu().numpy())
        if "emb_N_D" in wanted:
            parts["emb_N_D"].append(hidden.float().cpu().numpy())
        if "logits_N_C" in wanted:
            parts["logits_N_C"].append(logits.float().cpu().numpy())
        layers = (torch.flatten(features, 1), hidden, logits)
        if "act_mean_N_L" in wanted:
            parts["act_mean_N_L"].append(torch.stack([layer.mean(1) for layer in layers], 1).float().cpu().numpy())
        if "act_max_N_L" in wanted:
            parts["act_max_N_L"].append(torch.stack([layer.amax(1) for layer in layers], 1).float().cpu().numpy())
        if "grad_emb_N_D" in wanted:
            parts["grad_emb_N_D"].append(_gradient_embedding(probs, hidden).cpu().numpy())
        if mc_passes is not None:
            logits_T_B_C = mc_passes(features)
            parts["probs_T_N_C"].append(torch.softmax(logits_T_B_C.double(), 2).float().cpu().numpy())
        crash_point("score-batch")
    result = {}
    for name, chunks in parts.items():
        axis = 1 if name == "probs_T_N_C" else 0
        result[name] = np.concatenate(chunks, axis=axis) if chunks else _empty(name, model, dataset, mc_samples)
    return result


def _mc_passes(model: ActiveModel, mc_samples: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``features -> logits [T, B, C]`` of the head's T fixed dropout networks (masks from ``seed``).

    Stacked when the head is activelab's :class:`DropoutHead` (:meth:`StackedDropoutHead.supports`),
    otherwise T hooked passes of the head with the same masks.
    """
    masks = ConsistentDropout(model.head, n_samples=mc_samples, seed=seed)
    if StackedDropoutHead.supports(model.head, masks):
        return StackedDropoutHead(model.head, masks)
    return lambda features: _hooked_passes(model.head, features, masks)


def _hooked_passes(head: torch.nn.Module, features: torch.Tensor, masks: ConsistentDropout) -> torch.Tensor:
    """Logits ``[T, B, C]`` of ``head`` run once per pass with the masks of that pass."""
    samples = []
    with masks:
        for sample in range(masks.n_samples):
            masks.use(sample)
            samples.append(head(features))
    return torch.stack(samples)


def predict_probs(model: ActiveModel, dataset: Dataset, positions: np.ndarray, **options) -> np.ndarray:
    """Class probabilities ``[N, C]`` of the deterministic model (dropout off) for ``positions``."""
    return pool_outputs(model, dataset, positions, {"probs_N_C"}, **options)["probs_N_C"]


def embed(model: ActiveModel, dataset: Dataset, positions: np.ndarray, **options) -> np.ndarray:
    """Penultimate-layer embeddings ``[N, D]`` for ``positions``."""
    return pool_outputs(model, dataset, positions, {"emb_N_D"}, **options)["emb_N_D"]


def _gradient_embedding(probs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """BADGE's embedding: the cross-entropy gradient w.r.t. the last layer's weights at the predicted label.

    For logits ``W h`` and hypothetical label ``y = argmax p``, the gradient is ``(p - onehot(y)) h^T``,
    flattened to ``C * D`` values (Ash et al. 2020).
    """
    residual = probs.clone()
    residual[torch.arange(probs.shape[0]), probs.argmax(1)] -= 1.0
    return (residual.float()[:, :, None] * hidden[:, None, :]).flatten(1)


def _empty(name: str, model: ActiveModel, dataset: Dataset, mc_samples: int) -> np.ndarray:
    classes, width = dataset.num_classes, model.head.embedding_dim
    shapes = {"probs_N_C": (0, classes), "emb_N_D": (0, width), "logits_N_C": (0, classes),
              "act_mean_N_L": (0, 3), "act_max_N_L": (0, 3),
              "grad_emb_N_D": (0, classes * width), "probs_T_N_C": (mc_samples, 0, classes)}
    return np.empty(shapes[name], dtype=np.float32)
