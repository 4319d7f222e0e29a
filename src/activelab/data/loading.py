"""Batched torch loaders over dataset positions.

A loader draws whole batches of positions and asks the dataset for them in one call, so array- and
file-backed sources decode a batch at a time, also in worker processes.

Training loaders shuffle with a seeded permutation per epoch and never yield a batch of one image: a
lone last item is folded into the previous batch (a batch of one breaks BatchNorm in training mode, and
dropping it would leave a labelled image untrained). An epoch can be asked to hold at least
``min_batches`` batches: the labelled set is then repeated within the epoch, each pass in a fresh
permutation, so that 20 labelled images still give enough optimiser steps per round. With augmentation, each batch carries a seed drawn
in the main process, so the random flips and crops are the same whatever the number of workers.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from activelab.data.base import Dataset

#: ``augment(images, generator) -> images``: random per-image changes drawn only from ``generator``.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class _Batches(torch.utils.data.Dataset):
    """Maps ``(indices into positions, augmentation seed)`` to ``images`` or ``(images, labels)``."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, labels: np.ndarray | None,
                 augment: Augment | None):
        self.dataset = dataset
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return self.positions.size

    def __getitem__(self, batch: tuple[list[int], int]):
        indices, seed = batch
        images = self.dataset.load(self.positions[indices])
        if self.augment is not None:
            images = self.augment(images, torch.Generator().manual_seed(seed))
        if self.labels is None:
            return images
        return images, self.labels[indices]


class BatchPlan(torch.utils.data.Sampler):
    """Yields ``(indices, seed)`` per batch: in order, or a fresh seeded permutation every epoch.

    Parameters
    ----------
    size : int
        Number of items.
    batch_size : int
        Items per batch.
    shuffle_seed : int or None
        Seeds the epoch permutations and the per-batch augmentation seeds; None keeps the order.
    fold_singleton : bool
        Fold a last batch of one item into the previous batch (training), so no batch holds one item
        unless the whole set is one item.
    min_batches : int
        Repeat the items (each repetition freshly permuted) until an epoch holds at least this many
        batches; the epoch is then a whole number of passes over the items.
    """

    def __init__(self, size: int, batch_size: int, *, shuffle_seed: int | None = None, fold_singleton: bool = False,
                 min_batches: int = 1):
        self.size = size
        self.batch_size = batch_size
        self.fold_singleton = fold_singleton
        self.passes = 1
        while size and -(-self.passes * size // batch_size) < min_batches:
            self.passes += 1
        self.generator = self.seeds = None
        if shuffle_seed is not None:
            self.generator = torch.Generator().manual_seed(shuffle_seed)
            augment_seed = np.random.SeedSequence([shuffle_seed, 1]).generate_state(1)[0]
            self.seeds = torch.Generator().manual_seed(int(augment_seed))

    def _bounds(self) -> list[int]:
        total = self.passes * self.size
        bounds = list(range(0, total, self.batch_size)) + [total]
        if self.fold_singleton and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        return bounds

    def __len__(self) -> int:
        return len(self._bounds()) - 1

    def __iter__(self) -> Iterator[tuple[list[int], int]]:
        if self.generator is None:
            order = list(range(self.size)) * self.passes
        else:
            order = [item for _ in range(self.passes)
                     for item in torch.randperm(self.size, generator=self.generator).tolist()]
        bounds = self._bounds()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            seed = 0 if self.seeds is None else int(torch.randint(2**62, (1,), generator=self.seeds))
            yield order[start:stop], seed


def make_loader(dataset: Dataset, positions: np.ndarray, *, labels: np.ndarray | None = None,
                batch_size: int = 256, shuffle_seed: int | None = None, num_workers: int = 0,
                augment: Augment | None = None, min_batches: int = 1) -> DataLoader:
    """A loader over ``positions`` yielding ``images`` or ``(images, labels)`` batches.

    ``shuffle_seed`` (None: keep order) makes it a training loader: seeded epoch permutations, no batch
    of one item, at least ``min_batches`` batches per epoch, and ``augment`` applied to each batch with
    a generator seeded per batch.
    """
    if shuffle_seed is None and (augment is not None or min_batches > 1):
        raise ValueError("augmentation and repeated passes are for training loaders, which need a shuffle_seed")
    plan = BatchPlan(len(positions), batch_size, shuffle_seed=shuffle_seed, fold_singleton=shuffle_seed is not None,
                     min_batches=min_batches)
    return DataLoader(_Batches(dataset, positions, labels, augment), sampler=plan, batch_size=None,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
