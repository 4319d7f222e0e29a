"""The arrays source: the user's images as arrays in an ``.npz`` or HDF5 (``.h5``/``.hdf5``) file.

Pointed at the file with ``--data-dir`` (``locate`` returns None without it). The file holds an image
array ``X``, optional integer labels ``y`` (negative or absent: unlabelled) and optional
``class_names`` (an ``.npz`` member, or an attribute of the HDF5 file). ``X`` may be ``[N, H, W]`` (one
channel) or 4-D: ``[N, C, H, W]`` when its second axis is shorter than its last, ``[N, H, W, C]`` when
its last axis is the shorter (pass ``layout="nchw"`` or ``"nhwc"`` to decide a tie or override). Classes
are the option ``classes="a,b,c"``, else the stored class names, else ``0..max(y)``.

uint8 pixels are scaled to [0, 1] (other integer types by their maximum) and every channel is
standardised with a mean and std estimated on up to 1,024 evenly spaced items. HDF5 is read lazily by
slicing the dataset; an uncompressed ``.npz`` (``np.savez``) is memory-mapped in place, while a
compressed one (``np.savez_compressed``) cannot be and is read into memory: use ``np.savez`` or HDF5
for pools larger than memory.
"""

from __future__ import annotations

import operator
import os
import struct
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activelab.data.base import UNLABELLED, ArrayDataset, Dataset
from activelab.data.hdf5 import LazyHDF5, read_rows
from activelab.data.options import check_options, given_path, names_option, required_path
from activelab.data.sources import Source, register_source
from activelab.errors import ConfigError, DataError

_STATS_SAMPLE = 1024
#: Opener (a picklable callable returning the array), shape and dtype of an array in a file.
Opened = tuple[Callable[[], Any], tuple[int, ...], np.dtype]


class _ArrayRows:
    """The rows of an image array as ``[B, C, H, W]``, opening the array on first use in each process.

    ``opener`` is a picklable callable returning the array (a memory map of an ``.npz`` member, an
    h5py dataset, or an in-memory array), so worker processes reopen the file instead of copying it.
    """

    def __init__(self, opener: Callable[[], Any], shape: tuple[int, ...], dtype: np.dtype, channels_last: bool):
        self._opener = opener
        self._channels_last = channels_last
        self._array: Any = None
        self._pid: int | None = None
        count, *image = shape
        if len(image) == 2:
            image = [1, *image]
        elif channels_last:
            image = [image[2], image[0], image[1]]
        self.shape = (count, *image)
        self.ndim = 4
        self.dtype = dtype

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            self._array, self._pid = self._opener(), os.getpid()
        block = read_rows(self._array, rows)
        if block.ndim == 3:
            return block[:, None]
        return block.transpose(0, 3, 1, 2) if self._channels_last else block

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None, "_pid": None}


def _npz_member(path: Path, name: str) -> Opened | None:
    """An opener, shape and dtype for member ``name`` of an ``.npz`` (memory-mapped when stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        if f"{name}.npy" not in archive.namelist():
            return None
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as handle:
            handle.seek(info.header_offset + 26)  # the local file header's name and extra-field lengths
            name_length, extra_length = struct.unpack("<HH", handle.read(4))
            handle.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                shape = None
            if shape is not None and not dtype.hasobject:
                opener = partial(np.memmap, path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                                 order="F" if fortran else "C")
                return opener, shape, dtype
    with np.load(path, allow_pickle=False) as archive:
        array = archive[name]
    return partial(_identity, array), array.shape, array.dtype


def _identity(value: Any) -> Any:
    return value


def _open_arrays(path: Path) -> tuple[Callable[[], Any], tuple[int, ...], np.dtype, np.ndarray | None,
                                       tuple[str, ...] | None]:
    """Opener, shape and dtype of ``X``, the labels ``y`` (or None) and stored class names (or None)."""
    try:
        if path.suffix.lower() == ".npz":
            found = _npz_member(path, "X")
            if found is None:
                raise DataError(f"{path} has no array named X; save the images as X (and labels as y).")
            with np.load(path, allow_pickle=False) as archive:
                labels = archive["y"] if "y" in archive.files else None
                names = tuple(str(n) for n in archive["class_names"]) if "class_names" in archive.files else None
            return (*found, labels, names)
        with h5py.File(path, "r") as handle:
            if not isinstance(handle.get("X"), h5py.Dataset):
                raise DataError(f"{path} has no dataset named X; store the images as X (and labels as y).")
            labels = handle["y"][()] if "y" in handle else None
            stored = handle.attrs.get("class_names")
            names = None if stored is None else tuple(n.decode() if isinstance(n, bytes) else str(n) for n in stored)
            opener = partial(operator.getitem, LazyHDF5(path), "X")
            return opener, handle["X"].shape, handle["X"].dtype, labels, names
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} could not be read as {path.suffix} arrays ({error}); check that the file is "
                        "complete.") from None


def _channels_last(path: Path, shape: tuple[int, ...], layout: Any) -> bool:
    """Whether ``X`` of ``shape`` is ``[N, H, W, C]``, from the ``layout`` option or the shape."""
    if len(shape) == 3:
        return False
    if len(shape) != 4:
        raise DataError(f"{path} has X of shape {shape}; it must be [N,H,W], [N,C,H,W] or [N,H,W,C].")
    if layout is not None:
        if str(layout).lower() not in ("nchw", "nhwc"):
            raise ConfigError(f"option layout={layout!r} must be nchw or nhwc.")
        return str(layout).lower() == "nhwc"
    if shape[1] == shape[3]:
        raise ConfigError(f"{path} has X of shape {shape}, which could be [N,C,H,W] or [N,H,W,C]; "
                          "pass layout=nchw or layout=nhwc.")
    return shape[3] < shape[1]


def _checked_labels(path: Path, labels: np.ndarray | None, count: int, classes: int | None) -> np.ndarray:
    """``y`` as int64 with UNLABELLED for negative values, checked against the number of images and classes."""
    if labels is None:
        return np.full(count, UNLABELLED, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.shape != (count,) or not (np.issubdtype(labels.dtype, np.integer)
                                        or np.array_equal(labels, np.round(labels))):
        raise DataError(f"{path} has y of shape {labels.shape} and type {labels.dtype}; it must hold one integer "
                        f"label per image ({count}).")
    labels = labels.astype(np.int64)
    labels[labels < 0] = UNLABELLED
    if classes is not None and labels.size and labels.max() >= classes:
        row = int(np.argmax(labels >= classes))
        raise DataError(f"{path} has y[{row}] = {labels[row]}, outside the {classes} classes; fix the label or "
                        "the class names.")
    return labels


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
    """A dataset from an ``.npz`` or HDF5 file with ``X`` and optional ``y`` (options ``classes``, ``layout``)."""
    check_options("arrays", options, ("classes", "layout"))
    path = required_path(data_dir, "arrays", "an .npz or HDF5 file holding X and optionally y")
    if path.suffix.lower() not in (".npz", ".h5", ".hdf5"):
        raise ConfigError(f"{path} must be an .npz, .h5 or .hdf5 file for the arrays source.")
    opener, shape, dtype, labels, stored_names = _open_arrays(path)
    rows = _ArrayRows(opener, shape, dtype, _channels_last(path, shape, options.get("layout")))
    if options.get("classes") is not None:
        names = names_option("classes", options["classes"])
    else:
        names = stored_names
    labels = _checked_labels(path, labels, shape[0], None if names is None else len(names))
    if names is None:
        if labels.max(initial=UNLABELLED) < 0:
            raise ConfigError(f"{path} has no labels, so pass the class names with the classes option.")
        names = tuple(str(index) for index in range(int(labels.max()) + 1))
    scale = 1 / np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    sample = np.unique(np.linspace(0, shape[0] - 1, min(shape[0], _STATS_SAMPLE)).astype(np.int64))
    pixels = rows[sample].astype(np.float64) * scale
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    std[std == 0] = 1.0
    return ArrayDataset("arrays", rows, labels, names, mean=tuple(mean), std=tuple(std), scale=scale)


# classes=None: the classes are read from the user's data (or the classes option).
register_source(Source(
    name="arrays", description="your images as X (and optional y) in an .npz or HDF5 file",
    load=load, locate=given_path, classes=None, size="any", options=("classes", "layout")))
