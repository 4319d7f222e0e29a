"""What several benchmark scripts share: the peak extra memory of one call, and a synthetic HDF5 pool.

The scripts run from the repository root (``.venv/bin/python benchmarks/NAME.py``), so this folder is on
their import path and they import these helpers as ``from harness import ...``.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np

_WRITE_BLOCK = 65_536


def peak_extra_bytes(call) -> tuple[object, int]:
    """Run ``call()`` under tracemalloc; its result and the peak of Python-visible allocations above the start
    (numpy buffers count, memory held before the call does not)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak - before


def write_pool(path: Path, size: int, seed: int = 0) -> None:
    """``size`` random 28x28 uint8 images and seeded random labels 0..9 in the ``arrays`` source's HDF5
    layout (``X``, ``y``), written a block at a time so that a million images need little memory."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        images = handle.create_dataset("X", shape=(size, 28, 28), dtype=np.uint8, chunks=(1024, 28, 28))
        for start in range(0, size, _WRITE_BLOCK):
            stop = min(start + _WRITE_BLOCK, size)
            images[start:stop] = rng.integers(0, 256, (stop - start, 28, 28), dtype=np.uint8)
        handle.create_dataset("y", data=rng.integers(0, 10, size, dtype=np.int64))
