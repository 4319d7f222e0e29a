"""Batched torch loaders over dataset positions.

A loader draws whole batches of positions (a ``BatchSampler``) and asks the dataset for them in one
call, so array- and file-backed sources decode a batch at a time, also in worker processes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from activelab.data.base import Dataset


class _Batches(torch.utils.data.Dataset):
    """Maps a list of indices into ``positions`` to ``(images, labels)`` for one batch."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, labels: np.ndarray | None):
        self.dataset = dataset
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.positions.size

    def __getitem__(self, indices: list[int]):
        images = self.dataset.load(self.positions[indices])
        if self.labels is None:
            return images
        return images, self.labels[indices]


class _SeededPermutation(Sampler[int]):
    """A fresh permutation every epoch, drawn from a generator seeded once (reproducible shuffling)."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self.generator).tolist())


def make_loader(dataset: Dataset, positions: np.ndarray, *, labels: np.ndarray | None = None,
                batch_size: int = 256, shuffle_seed: int | None = None, num_workers: int = 0) -> DataLoader:
    """A loader over ``positions`` yielding ``images`` or ``(images, labels)`` batches.

    ``shuffle_seed`` (None: keep order) seeds the epoch permutations, so training order is reproducible.
    """
    size = len(positions)
    sampler = SequentialSampler(range(size)) if shuffle_seed is None else _SeededPermutation(size, shuffle_seed)
    return DataLoader(_Batches(dataset, positions, labels), sampler=BatchSampler(sampler, batch_size, False),
                      batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0)
