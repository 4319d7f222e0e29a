"""Reader for the idx format of MNIST-style datasets, memory-mapped so nothing is loaded up front.

An idx file starts with two zero bytes, a type code, the number of dimensions and one big-endian int32
per dimension, followed by the raw array. Gzipped files are decompressed once into the cache (written
to a temporary name and renamed, so an interrupted decompression leaves nothing behind).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from activelab.errors import DataError

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path, cache_dir: Path) -> np.ndarray:
    """Return the array in idx file ``path`` as a read-only memory map (``.gz`` decompressed to ``cache_dir``)."""
    path = Path(path)
    raw = _decompressed(path, cache_dir) if path.suffix == ".gz" else path
    with open(raw, "rb") as handle:
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _TYPES:
            raise DataError(f"{path} is not an idx file (bad magic number).")
        ndim = header[3]
        dims_bytes = handle.read(4 * ndim)
        if len(dims_bytes) < 4 * ndim:
            raise DataError(f"{path} is truncated inside its idx header.")
    dims = struct.unpack(f">{ndim}i", dims_bytes)
    dtype = np.dtype(_TYPES[header[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims)) * dtype.itemsize
    actual = raw.stat().st_size
    if actual != expected:
        raise DataError(f"{path} holds {actual} bytes but its header {tuple(dims)} needs {expected}; "
                        "the file is truncated or corrupt.")
    return np.memmap(raw, dtype=dtype, mode="r", offset=offset, shape=tuple(dims))


def _decompressed(path: Path, cache_dir: Path) -> Path:
    stat = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir / f"{path.stem}.{tag}"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial{os.getpid()}")
    try:
        with gzip.open(path, "rb") as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, target)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"{path} could not be decompressed ({error}); the file is truncated or corrupt.") from None
    return target
