"""Reading rows of HDF5 datasets (and arrays) lazily, from the main process and from DataLoader workers.

Used by the DroughtWatch cache and the arrays source: a dataset object holds a :class:`LazyHDF5`, which
pickles as its path, so each worker process opens its own handle, and :func:`read_rows` reads the rows
of a batch as a few slices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np


class LazyHDF5:
    """An HDF5 file opened read-only on first use in each process; it pickles as its path.

    h5py handles can neither be pickled nor shared across ``fork``, so a dataset holds one of these and
    every DataLoader worker opens its own handle.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __getitem__(self, name: str) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[name]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}


def read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for a numpy array, memory map or h5py dataset, in the order of ``rows``.

    Each row is read once. From HDF5, every run of consecutive rows is read as one slice: h5py's own
    fancy indexing builds a point selection that takes about a second for 256 scattered rows, while
    slices take milliseconds, and scoring a pool in order reads one slice per batch.
    """
    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    inverse = inverse.reshape(-1)
    if isinstance(array, np.ndarray):
        return array[unique][inverse]
    if unique.size == 0:
        return np.asarray(array[0:0])
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    starts = np.concatenate([unique[:1], unique[breaks]])
    stops = np.concatenate([unique[breaks - 1], unique[-1:]]) + 1
    block = np.concatenate([array[int(start):int(stop)] for start, stop in zip(starts, stops)])
    return block[inverse]
