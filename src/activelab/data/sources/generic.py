"""The user's own images: a folder per class, a CSV of paths and labels, or an array file.

Three sources, each pointed at its data with ``--data-dir`` (``locate`` returns None without it):

``image-folder``
    A folder with one sub-folder per class. Classes are the sub-folder names in sorted order; the image
    files inside each (searched recursively, hidden files skipped) are sorted by relative path, so the
    same folder always gives the same ids. Keys are the paths relative to the folder.
``image-csv``
    A CSV file with the columns ``path`` (relative to the CSV's folder, or absolute) and ``label``. An
    empty label marks an unlabelled item (:data:`~activelab.data.base.UNLABELLED`), which only a person
    can label. Classes are the option ``classes="a,b,c"`` when given (then any other label is an
    error), otherwise the distinct labels, sorted (numerically when all are integers).
``arrays``
    An ``.npz`` or HDF5 (``.h5``/``.hdf5``) file with an image array ``X`` and optional integer labels
    ``y`` (negative or absent: unlabelled) and optional ``class_names``. ``X`` may be ``[N, H, W]``
    (one channel) or 4-D: ``[N, C, H, W]`` when its second axis is shorter than its last, ``[N, H, W, C]``
    when its last axis is the shorter (pass ``layout="nchw"`` or ``"nhwc"`` to decide a tie or override).
    uint8 pixels are scaled to [0, 1] (other integer types by their maximum) and every channel is
    standardised with a mean and std estimated on up to 1,024 evenly spaced items. HDF5 is read lazily
    by slicing the dataset; an uncompressed ``.npz`` (``np.savez``) is memory-mapped in place, while a
    compressed one (``np.savez_compressed``) cannot be and is read into memory: use ``np.savez`` or
    HDF5 for pools larger than memory.

Image files are decoded with PIL a batch at a time, converted to RGB (or grey with ``grayscale=True``),
resized to ``size`` (default: the size of the first image) and normalised with the ImageNet statistics,
which is what pretrained backbones expect. The helpers for CSV tables, image files, options and
per-process HDF5 handles are shared with the DeepWeeds, Cassava and DroughtWatch sources.
"""

from __future__ import annotations

import csv
import operator
import os
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image

from activelab.data.base import UNLABELLED, ArrayDataset, Dataset
from activelab.data.sources import Source, register_source
from activelab.data.transforms import (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, IMAGENET_MEAN, IMAGENET_STD,
                                       Preprocess, to_tensor)
from activelab.errors import ConfigError, DataError, DatasetNotFoundError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_STATS_SAMPLE = 1024


# ------------------------------------------------------------------------------------------ options


def check_options(source: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Raise ConfigError when ``options`` holds a name that ``source`` does not support."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
        raise ConfigError(f"the {source} source has no option {unknown[0]!r}; {accepted}.")


def flag_option(name: str, value: Any) -> bool:
    """A boolean option given as a bool, 0/1 or a word such as "true"/"no"."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ConfigError(f"option {name}={value!r} must be true or false.")


def size_option(value: Any) -> tuple[int, int] | None:
    """An image size given as ``224``, ``"224"``, ``"240,320"``/``"240x320"`` or ``(240, 320)`` (height, width)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
    else:
        parts = [value] if isinstance(value, int) else value
    try:
        size = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"option size={value!r} must be a positive height,width such as 224 or 240,320.")
    return size


def names_option(name: str, value: Any) -> tuple[str, ...]:
    """A list of names given as ``"a,b,c"`` or a sequence of strings (non-empty, no duplicates)."""
    parts = value.split(",") if isinstance(value, str) else value
    names = tuple(part.strip() for part in parts) if isinstance(parts, (list, tuple)) and all(
        isinstance(part, str) for part in parts) else ()
    if not names or not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"option {name}={value!r} must be a comma-separated list of distinct, non-empty names.")
    return names


def required_path(data_dir: Path | str | None, source: str, what: str) -> Path:
    """The ``--data-dir`` path that a generic source needs, which must exist."""
    if data_dir is None:
        raise ConfigError(f"the {source} source needs --data-dir pointing at {what}.")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{path} does not exist; point --data-dir at {what}.")
    return path


# ----------------------------------------------------------------------------------- lazy handles


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
    if isinstance(array, np.ndarray):
        return array[unique][inverse.reshape(-1)]
    if unique.size == 0:
        return np.asarray(array[0:0])
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    starts = np.concatenate([unique[:1], unique[breaks]])
    stops = np.concatenate([unique[breaks - 1], unique[-1:]]) + 1
    block = np.concatenate([array[int(start):int(stop)] for start, stop in zip(starts, stops)])
    return block[inverse.reshape(-1)]


# ------------------------------------------------------------------------------------- CSV tables


def read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str | None]]]:
    """The rows of CSV file ``path`` as ``(line number, {column: value})``, after checking its header.

    Raises
    ------
    DataError
        When the file cannot be read or its header lacks one of ``columns``.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            missing = [column for column in columns if column not in header]
            if missing:
                raise DataError(f"{path} has no column {missing[0]!r} (its header is {','.join(header) or 'empty'}); "
                                f"it needs the columns {','.join(columns)}.")
            return [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} could not be read as a CSV file ({error}).") from None


def cell(path: Path, line: int, row: Mapping[str, str | None], column: str) -> str:
    """The stripped value of ``column`` in a CSV row, which must be present."""
    value = row.get(column)
    if value is None:
        raise DataError(f"{path} line {line} has no value in column {column!r}; every row needs one.")
    return value.strip()


def read_image_table(path: Path, image_root: Path, path_column: str, label_column: str,
                     label_index: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    """Image names and labels from a CSV, checking that every image exists and appears once.

    Parameters
    ----------
    path : Path
        The CSV file.
    image_root : Path
        The folder that the names in ``path_column`` are relative to.
    label_index : mapping of str to int
        Every accepted label value and its class index (``""`` may map to UNLABELLED).

    Raises
    ------
    DataError
        Naming the file, line and value of a missing column, unknown label, missing or repeated image.
    """
    names, labels, seen = [], [], set()
    for line, row in read_csv(path, (path_column, label_column)):
        name, label = cell(path, line, row, path_column), cell(path, line, row, label_column)
        if label not in label_index:
            known = ", ".join(repr(value) for value in label_index if value)
            raise DataError(f"{path} line {line}: label {label!r} is not a known class (expected one of {known}); "
                            "correct the row.")
        if name in seen:
            raise DataError(f"{path} line {line}: image {name!r} is listed twice; list every image once.")
        if not (image_root / name).is_file():
            raise DataError(f"{path} line {line}: image {name!r} is not in {image_root}; add the file or remove "
                            "the row.")
        seen.add(name)
        names.append(name)
        labels.append(label_index[label])
    if not names:
        raise DataError(f"{path} lists no images; add one row per image.")
    return names, np.array(labels, dtype=np.int64)


# ------------------------------------------------------------------------------------ image files


class ImageFileDataset(Dataset):
    """Images stored one per file (JPEG, PNG, ...), decoded with PIL only when a batch is loaded.

    Parameters
    ----------
    name : str
        Source name.
    root : Path
        Folder that ``files`` are relative to.
    files : sequence of str
        One file name per item; position ``i`` is ``files[i]``, which is also its key.
    labels : ndarray of int64
        Class index per item, UNLABELLED where there is none.
    class_names : tuple of str
        Names of the classes.
    preprocess : Preprocess
        Resize and normalisation (``size`` must be set: every image is brought to it).
    grayscale : bool
        Decode to one grey channel instead of RGB.
    predefined_test : ndarray of bool, optional
        Mask of the source's official test split.
    """

    def __init__(self, name: str, root: Path, files: Sequence[str], labels: np.ndarray, class_names: Sequence[str],
                 preprocess: Preprocess, *, grayscale: bool = False, predefined_test: np.ndarray | None = None):
        if preprocess.size is None:
            raise ValueError("ImageFileDataset needs a preprocess with a size")
        self.name = name
        self.class_names = tuple(class_names)
        self.input_shape = (1 if grayscale else 3, *preprocess.size)
        self._root = Path(root)
        self._files = list(files)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._preprocess = preprocess
        self._mode = "L" if grayscale else "RGB"
        self._predefined_test = predefined_test

    def __len__(self) -> int:
        return len(self._files)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def predefined_test(self) -> np.ndarray | None:
        return self._predefined_test

    def key(self, position: int) -> str:
        return self._files[position]

    def load(self, positions: np.ndarray) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return torch.empty((0, *self.input_shape))
        return self._preprocess([to_tensor(self._decode(self._files[p])) for p in positions])

    def _decode(self, name: str) -> np.ndarray:
        path = self._root / name
        height, width = self.input_shape[1:]
        try:
            with Image.open(path) as image:
                image.draft(self._mode, (width, height))  # JPEG: decode at a reduced scale when much larger
                return np.asarray(image.convert(self._mode))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{path} could not be decoded as an image ({error}); replace or remove the file.") from None


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of the image file at ``path``, reading only its header."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} could not be decoded as an image ({error}); replace or remove the file.") from None


def image_preprocess(size: tuple[int, int], grayscale: bool) -> Preprocess:
    """Resize to ``size`` and normalise with the ImageNet statistics (grey: their channel average)."""
    if grayscale:
        return Preprocess(size, IMAGENET_GREY_MEAN, IMAGENET_GREY_STD)
    return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD)


# ----------------------------------------------------------------------------------- image-folder


def load_image_folder(data_dir: Path | None = None, **options: Any) -> Dataset:
    """A dataset from a folder with one sub-folder of images per class (options ``size``, ``grayscale``)."""
    check_options("image-folder", options, ("size", "grayscale"))
    folder = required_path(data_dir, "image-folder", "a folder with one sub-folder of images per class")
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder; point --data-dir at a folder with one sub-folder "
                                   "of images per class.")
    classes = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    files, labels = [], []
    for index, class_name in enumerate(classes):
        found = sorted(path.relative_to(folder).as_posix() for path in (folder / class_name).rglob("*")
                       if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"{folder} holds no images in class sub-folders; put each class's images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))}) in a sub-folder named after it.")
    grayscale = flag_option("grayscale", options.get("grayscale", False))
    size = size_option(options.get("size")) or image_size(folder / files[0])
    return ImageFileDataset("image-folder", folder, files, np.array(labels, dtype=np.int64), classes,
                            image_preprocess(size, grayscale), grayscale=grayscale)


# -------------------------------------------------------------------------------------- image-csv


def _sorted_labels(values: set[str]) -> list[str]:
    if all(value.lstrip("-").isdigit() for value in values):
        return sorted(values, key=int)
    return sorted(values)


def load_image_csv(data_dir: Path | None = None, **options: Any) -> Dataset:
    """A dataset from a CSV of ``path,label`` rows (options ``size``, ``grayscale``, ``classes``)."""
    check_options("image-csv", options, ("size", "grayscale", "classes"))
    path = required_path(data_dir, "image-csv", "a CSV file with the columns path,label")
    if options.get("classes") is not None:
        classes = list(names_option("classes", options["classes"]))
    else:
        values = {cell(path, line, row, "label") for line, row in read_csv(path, ("path", "label"))}
        classes = _sorted_labels(values - {""})
    label_index = {"": UNLABELLED, **{name: index for index, name in enumerate(classes)}}
    files, labels = read_image_table(path, path.parent, "path", "label", label_index)
    if not classes:
        raise ConfigError(f"{path} has no labels at all, so pass the class names with the classes option.")
    grayscale = flag_option("grayscale", options.get("grayscale", False))
    size = size_option(options.get("size")) or image_size(path.parent / files[0])
    return ImageFileDataset("image-csv", path.parent, files, labels, classes, image_preprocess(size, grayscale),
                            grayscale=grayscale)


# ----------------------------------------------------------------------------------------- arrays


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


def _npz_member(path: Path, name: str) -> tuple[Callable[[], Any], tuple[int, ...], np.dtype] | None:
    """An opener, shape and dtype for member ``name`` of an ``.npz`` (memory-mapped when stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        if f"{name}.npy" not in archive.namelist():
            return None
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as handle:
            handle.seek(info.header_offset + 26)
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


def load_arrays(data_dir: Path | None = None, **options: Any) -> Dataset:
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


# ----------------------------------------------------------------------------------- registration
# ``classes=0``: the number of classes is read from the user's data.


def _locate(data_dir: Path | None = None) -> Path | None:
    """The ``--data-dir`` path when given and present (the generic sources are never searched for)."""
    if data_dir is None or not Path(data_dir).expanduser().exists():
        return None
    return Path(data_dir).expanduser()


register_source(Source(
    name="image-folder", description="your images, one sub-folder per class (--data-dir FOLDER)",
    load=load_image_folder, locate=_locate, classes=0, size="any", options=("size", "grayscale")))
register_source(Source(
    name="image-csv", description="your images listed in a CSV of path,label (empty label: unlabelled)",
    load=load_image_csv, locate=_locate, classes=0, size="any", options=("size", "grayscale", "classes")))
register_source(Source(
    name="arrays", description="your images as X (and optional y) in an .npz or HDF5 file",
    load=load_arrays, locate=_locate, classes=0, size="any", options=("classes", "layout")))
