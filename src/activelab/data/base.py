"""The dataset abstraction every source implements.

A :class:`Dataset` is a fixed, ordered collection of images. Position ``i`` (0 <= i < len) is the item's
stable id: the same files always give the same order, and the ledger stores these ids. ``key(i)``
gives the original name (file name, record number) for people. Images are decoded only when asked
for, a batch at a time, so a pool may be far larger than memory.
"""

from __future__ import annotations

import abc
import hashlib

import numpy as np
import torch

from activelab.data.transforms import normalise

#: Label of an item that has no label yet (only a person can give it one).
UNLABELLED = -1


class Dataset(abc.ABC):
    """A lazy, position-indexed image dataset with integer class labels.

    Attributes
    ----------
    name : str
        The source's registered name.
    class_names : tuple of str
        Name of each class; labels index into it.
    input_shape : tuple of int
        ``(channels, height, width)`` of the tensors :meth:`load` returns.
    """

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @property
    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """int64 label of every item, :data:`UNLABELLED` where the source has none."""

    @abc.abstractmethod
    def load(self, positions: np.ndarray) -> torch.Tensor:
        """Decode the items at ``positions`` into a float32 tensor ``[B, C, H, W]``, transformed."""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def predefined_test(self) -> np.ndarray | None:
        """Boolean mask of the source's official test split, or None when it has none."""
        return None

    def class_index(self) -> dict[str, int]:
        """Class index by class name and by the index written as text, for labels a person gives."""
        lookup = {name: index for index, name in enumerate(self.class_names)}
        lookup.update({str(index): index for index in range(self.num_classes)})
        return lookup

    def key(self, position: int) -> str:
        """Human-readable original identifier of an item (defaults to its position)."""
        return str(position)

    def fingerprint(self) -> str:
        """A short digest of name, size, classes and labels, checked when a run is resumed."""
        digest = hashlib.sha256()
        digest.update(f"{self.name}|{len(self)}|{'/'.join(self.class_names)}|{self.input_shape}".encode())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


class ArrayDataset(Dataset):
    """Images held in an array or a memory map, ``[N, H, W]`` or ``[N, C, H, W]``.

    Pixels are scaled by ``scale`` and normalised per channel with ``mean``/``std`` on load; only the
    requested rows are read, so a memory-mapped file stays on disk.
    """

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], *,
                 mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), scale: float = 1.0,
                 predefined_test: np.ndarray | None = None, keys: tuple[str, ...] | None = None):
        self.name = name
        self._images = images
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(class_names)
        shape = images.shape[1:] if images.ndim == 4 else (1, *images.shape[1:])
        self.input_shape = tuple(int(size) for size in shape)
        self._scale = scale
        self._mean = tuple(float(value) for value in mean)
        self._std = tuple(float(value) for value in std)
        self._predefined_test = predefined_test
        self._keys = keys

    def __len__(self) -> int:
        return self._images.shape[0]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def predefined_test(self) -> np.ndarray | None:
        return self._predefined_test

    def key(self, position: int) -> str:
        return self._keys[position] if self._keys is not None else str(position)

    def load(self, positions: np.ndarray) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        rows = np.empty((positions.size, *self.input_shape), dtype=np.float32)
        rows[order] = self._images[positions[order]].reshape(positions.size, *self.input_shape)
        return normalise(torch.from_numpy(rows).mul_(self._scale), self._mean, self._std)
