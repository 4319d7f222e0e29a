"""Chunked inference over a pool: probabilities, MC-dropout samples, embeddings, activations, gradients.

One pass over the pool computes everything a strategy asked for. Per batch the deterministic trunk runs
once; the head runs once in eval mode (probabilities, penultimate embedding, layer activations) and,
when MC samples are needed, T more times with only its dropout layers switched on. BatchNorm and every
other layer stay in eval mode, so inference never changes the model (the study's defects 12 and 13).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from activelab.data.base import Dataset
from activelab.data.loading import make_loader
from activelab.faults import crash_point
from activelab.models.heads import ActiveModel

#: Inputs this module computes in one pass over the pool (see ``activelab.strategies.INPUTS``).
POOL_OUTPUTS = ("probs_N_C", "probs_T_N_C", "emb_N_D", "act_N_L", "grad_emb_N_D")


@contextlib.contextmanager
def mc_dropout(module: nn.Module) -> Iterator[None]:
    """Switch only the dropout layers of ``module`` to training mode, restoring their modes afterwards."""
    dropouts = [layer for layer in module.modules() if isinstance(layer, nn.Dropout)]
    modes = [layer.training for layer in dropouts]
    try:
        for layer in dropouts:
            layer.train()
        yield
    finally:
        for layer, mode in zip(dropouts, modes):
            layer.train(mode)


@torch.no_grad()
def pool_outputs(model: ActiveModel, dataset: Dataset, positions: np.ndarray, wanted: set[str], *,
                 mc_samples: int = 10, batch_size: int = 256, device: torch.device | str = "cpu",
                 num_workers: int = 0, seed: int = 0, progress: bool = False,
                 description: str = "scoring pool") -> dict[str, np.ndarray]:
    """Compute the ``wanted`` outputs (names from :data:`POOL_OUTPUTS`) for the items at ``positions``.

    ``seed`` fixes the dropout masks of the MC passes, so scores are reproducible.
    """
    unknown = set(wanted) - set(POOL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown pool outputs {sorted(unknown)}")
    model = model.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        loader = make_loader(dataset, positions, batch_size=batch_size, num_workers=num_workers)
        for images in tqdm(loader, desc=description, total=len(loader), disable=not progress, leave=False):
            features = model.trunk(images.to(device))
            hidden, logits = model.head.forward_parts(features)
            probs = torch.softmax(logits.double(), dim=1)
            if "probs_N_C" in wanted:
                parts["probs_N_C"].append(probs.float().cpu().numpy())
            if "emb_N_D" in wanted:
                parts["emb_N_D"].append(hidden.float().cpu().numpy())
            if "act_N_L" in wanted:
                layers = [torch.flatten(features, 1).mean(1), hidden.mean(1), logits.mean(1)]
                parts["act_N_L"].append(torch.stack(layers, 1).float().cpu().numpy())
            if "grad_emb_N_D" in wanted:
                parts["grad_emb_N_D"].append(_gradient_embedding(probs, hidden).cpu().numpy())
            if "probs_T_N_C" in wanted:
                with mc_dropout(model.head):
                    samples = [torch.softmax(model.head(features).double(), 1).float() for _ in range(mc_samples)]
                parts["probs_T_N_C"].append(torch.stack(samples).cpu().numpy())
            crash_point("score-batch")
    finally:
        torch.random.set_rng_state(generator_state)
    result = {}
    for name, chunks in parts.items():
        axis = 1 if name == "probs_T_N_C" else 0
        result[name] = np.concatenate(chunks, axis=axis) if chunks else _empty(name, model, dataset, mc_samples)
    return result


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
    shapes = {"probs_N_C": (0, classes), "emb_N_D": (0, width), "act_N_L": (0, 3),
              "grad_emb_N_D": (0, classes * width), "probs_T_N_C": (mc_samples, 0, classes)}
    return np.empty(shapes[name], dtype=np.float32)
