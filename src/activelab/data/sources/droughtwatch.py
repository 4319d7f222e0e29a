"""DroughtWatch: 65x65 Landsat-8 patches of northern Kenya labelled with forage quality (0, 1, 2, 3+ cows).

Hobbs & Svetlichnaya [1]_ paired satellite patches with the judgement of pastoralists on the ground
of how many cows the land around them could feed; the W&B benchmark ships 86,317 training and 10,778
validation patches as TFRecord files (``train/part-r-*`` and ``val/part-r-*``; the downloaded zip unpacks
to ``droughtwatch_data/``). Each record is a ``tf.train.Example`` with the Landsat bands ``B1``..``B11``
and an int64 ``label`` 0..3. The published files store each band as raw bytes (one uint8 per pixel, 65*65
of them, read with ``decode_raw(uint8)`` by the benchmark's own code); a band stored as a float list of
65*65 values is accepted too.

The records are converted once into an HDF5 file in the cache: one ``images`` dataset ``[N, 11, 65, 65]``
(uint8, or float32 for float bands), chunked by 256 images, written under a temporary name and renamed.
The file's name depends on the TFRecord files' names, sizes and times, so new files cause a new
conversion. Afterwards images are read lazily, a batch at a time. All bands of an image are stored
together because a batch of scattered images is then one read per image, where a dataset per band would
need eleven; the chosen bands are taken from the batch in memory. Every band is standardised with its
mean and std over the training split, computed during the conversion.

Options: ``binary`` (0 cows against 1 or more: 2 classes), ``rgb`` (bands B4, B3, B2) and ``bands``
(e.g. ``"B2,B3,B4,B8"``, in that channel order; the study parsed this flag and then ignored it). The
official validation split is :attr:`predefined_test`; keys are ``train/part-r-00000#17`` (file and record).

References
----------
.. [1] Hobbs, A. & Svetlichnaya, S. (2020). Satellite-based Prediction of Forage Conditions for Livestock
       in Northern Kenya. ICLR 2020 Workshop on Computer Vision for Agriculture. arXiv:2004.04081.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from activelab.data.base import Dataset
from activelab.data.hdf5 import LazyHDF5, read_rows
from activelab.data.options import check_options, flag_option, names_option
from activelab.data.sources import Source, cache_root, data_roots, register_source
from activelab.data.tfrecord import read_examples
from activelab.data.transforms import normalise
from activelab.errors import ConfigError, DataError, DatasetNotFoundError

log = logging.getLogger(__name__)

BANDS = tuple(f"B{number}" for number in range(1, 12))
RGB_BANDS = ("B4", "B3", "B2")
SIDE = 65
CLASS_NAMES = ("0 cows", "1 cow", "2 cows", "3+ cows")
BINARY_CLASS_NAMES = ("0 cows", "1+ cows")
SPLITS = ("train", "val")
URL = "https://github.com/wandb/droughtwatch"
_FORMAT = 1  # bump when the HDF5 layout changes, so old caches are not reused
_CHUNK = 256


def _record_files(folder: Path) -> dict[str, list[Path]]:
    """The sorted ``part-*`` TFRecord files of each split (``*.gstmp`` upload leftovers skipped)."""
    return {split: sorted(path for path in (folder / split).glob("part-*")
                          if path.is_file() and not path.name.endswith("gstmp"))
            for split in SPLITS}


def locate(data_dir: Path | None = None) -> Path | None:
    """The first folder with ``train/`` and ``val/`` folders of ``part-*`` files (or its ``droughtwatch_data/``)."""
    folders = [Path(data_dir)] if data_dir is not None else [root / "droughtwatch" for root in data_roots()]
    for folder in folders:
        for candidate in (folder, folder / "droughtwatch_data"):
            if all(_record_files(candidate).values()):
                return candidate
    return None


def _chosen_bands(options: dict[str, Any]) -> tuple[str, ...]:
    rgb = flag_option("rgb", options.get("rgb", False))
    if options.get("bands") is None:
        return RGB_BANDS if rgb else BANDS
    bands = tuple(name.upper() for name in names_option("bands", options["bands"]))
    unknown = [name for name in bands if name not in BANDS]
    if unknown:
        raise ConfigError(f"option bands={options['bands']!r} names {unknown[0]!r}, which is not a DroughtWatch band; "
                          "choose among B1..B11.")
    if rgb and bands != RGB_BANDS:
        raise ConfigError(f"options rgb and bands={options['bands']!r} ask for different bands; give only one of them.")
    return bands


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
    """Build DroughtWatch (train then val records), converting the TFRecords to HDF5 on first use.

    Parameters
    ----------
    data_dir : Path, optional
        Folder with ``train/`` and ``val/`` (default: searched in the data roots).
    binary : bool
        Two classes, 0 cows against 1 or more.
    rgb : bool
        Bands B4, B3, B2 only.
    bands : str or sequence of str
        Bands to use, in channel order, such as ``"B2,B3,B4,B8"``.

    Raises
    ------
    ConfigError
        For an unknown option or band name.
    DatasetNotFoundError
        When the TFRecords are not in ``data_dir`` or the data roots.
    DataError
        When a record is truncated, corrupt or not a DroughtWatch example.
    """
    check_options("droughtwatch", options, ("binary", "rgb", "bands"))
    bands = _chosen_bands(options)
    binary = flag_option("binary", options.get("binary", False))
    folder = locate(data_dir)
    if folder is None:
        where = str(data_dir) if data_dir is not None else ", ".join(str(r / "droughtwatch") for r in data_roots())
        raise DatasetNotFoundError(f"DroughtWatch (train/ and val/ folders of part-r-* TFRecord files) was not found "
                                   f"in {where}; download droughtwatch_97K.zip as described at {URL}, unzip it into "
                                   "one of those folders or pass --data-dir.")
    files = _record_files(folder)
    target = _cache_file(folder, files)
    if not target.is_file():
        _convert(files, target)
    return DroughtWatchDataset(target, bands, binary)


def _cache_file(folder: Path, files: dict[str, list[Path]]) -> Path:
    digest = hashlib.sha256(f"{_FORMAT}|{folder.resolve()}".encode())
    for split, paths in files.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"|{split}/{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_root() / "droughtwatch" / f"droughtwatch-{digest.hexdigest()[:12]}.h5"


def _band(example: dict, name: str, path: Path, number: int) -> np.ndarray:
    """Band ``name`` of a parsed record as a 65x65 uint8 (raw bytes) or float32 (float list) array."""
    value = example.get(name)
    if isinstance(value, list) and len(value) == 1 and len(value[0]) >= SIDE * SIDE:
        return np.frombuffer(value[0], dtype=np.uint8)[:SIDE * SIDE].reshape(SIDE, SIDE)
    if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.size == SIDE * SIDE:
        return value.reshape(SIDE, SIDE)
    raise DataError(f"{path} record {number} has no {SIDE}x{SIDE} band {name!r}; it is not a DroughtWatch record.")


def _label(example: dict, path: Path, number: int) -> int:
    value = example.get("label")
    if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.size != 1 or not 0 <= value[0] <= 3:
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        raise DataError(f"{path} record {number} has label {shown!r}, not one int64 in 0..3; the file is not a "
                        "DroughtWatch TFRecord.")
    return int(value[0])


class _Writer:
    """Appends blocks of images to the HDF5 ``images`` dataset and sums the training split's band statistics."""

    def __init__(self, out: h5py.File):
        self.out = out
        self.images: list[np.ndarray] = []
        self.in_train: list[bool] = []
        self.total = np.zeros(len(BANDS))
        self.total_squares = np.zeros(len(BANDS))
        self.train_pixels = 0
        self.dtype: np.dtype | None = None

    def add(self, bands: list[np.ndarray], in_train: bool, path: Path, number: int) -> None:
        kinds = {band.dtype for band in bands}
        if self.dtype is None:
            self.dtype = next(iter(kinds))
        if kinds != {self.dtype}:
            raise DataError(f"{path} record {number} mixes bands stored as bytes and as floats, unlike the records "
                            "before it; the files come from different versions of the dataset.")
        self.images.append(np.stack(bands))
        self.in_train.append(in_train)
        if len(self.images) == _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.images:
            return
        block = np.stack(self.images)
        if "images" not in self.out:
            self.out.create_dataset("images", shape=(0, *block.shape[1:]), maxshape=(None, *block.shape[1:]),
                                    dtype=block.dtype, chunks=(_CHUNK, *block.shape[1:]))
        dataset = self.out["images"]
        dataset.resize(dataset.shape[0] + len(block), axis=0)
        dataset[-len(block):] = block
        train = block[np.array(self.in_train)].astype(np.float64)
        self.total += train.sum(axis=(0, 2, 3))
        self.total_squares += np.square(train).sum(axis=(0, 2, 3))
        self.train_pixels += len(train) * SIDE * SIDE
        self.images, self.in_train = [], []


def _convert(files: dict[str, list[Path]], target: Path) -> None:
    """Convert the TFRecords to ``target`` (HDF5), through a temporary file renamed when complete."""
    started = time.monotonic()
    log.info("converting the DroughtWatch TFRecords once into %s", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial{os.getpid()}")
    labels, splits, file_ids, records, names = [], [], [], [], []
    try:
        with h5py.File(partial, "w") as out:
            writer = _Writer(out)
            for split_id, split in enumerate(SPLITS):
                for path in files[split]:
                    names.append(f"{split}/{path.name}")
                    for number, example in enumerate(read_examples(path)):
                        writer.add([_band(example, band, path, number) for band in BANDS], split == "train",
                                   path, number)
                        labels.append(_label(example, path, number))
                        splits.append(split_id)
                        file_ids.append(len(names) - 1)
                        records.append(number)
            writer.flush()
            if writer.train_pixels == 0:
                raise DataError(f"{files['train'][0].parent} holds no training records; download the dataset again.")
            mean = writer.total / writer.train_pixels
            std = np.sqrt(np.maximum(writer.total_squares / writer.train_pixels - mean**2, 0))
            out.attrs.update(format=_FORMAT, files=names, band_mean=mean, band_std=np.where(std > 0, std, 1.0))
            for name, values, dtype in (("label", labels, np.uint8), ("split", splits, np.uint8),
                                        ("file", file_ids, np.int32), ("record", records, np.int32)):
                out.create_dataset(name, data=np.array(values, dtype=dtype))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("converted %d DroughtWatch records in %.0f s", len(labels), time.monotonic() - started)


class DroughtWatchDataset(Dataset):
    """DroughtWatch read lazily from its converted HDF5 file (see the module docstring).

    Parameters
    ----------
    path : Path
        The converted HDF5 file.
    bands : tuple of str
        Bands to load, in channel order.
    binary : bool
        Merge labels 1..3 into one class.
    """

    name = "droughtwatch"

    def __init__(self, path: Path, bands: tuple[str, ...], binary: bool):
        with h5py.File(path, "r") as handle:
            raw_labels = handle["label"][()].astype(np.int64)
            self._test = handle["split"][()] == SPLITS.index("val")
            self._file_ids = handle["file"][()]
            self._records = handle["record"][()]
            self._files = [str(name) for name in handle.attrs["files"]]
            self._columns = [BANDS.index(band) for band in bands]
            self._mean = tuple(float(v) for v in handle.attrs["band_mean"][self._columns])
            self._std = tuple(float(v) for v in handle.attrs["band_std"][self._columns])
        self._h5 = LazyHDF5(path)
        self._bands = tuple(bands)
        self._labels = (raw_labels > 0).astype(np.int64) if binary else raw_labels
        self.class_names = BINARY_CLASS_NAMES if binary else CLASS_NAMES
        self.input_shape = (len(bands), SIDE, SIDE)

    def __len__(self) -> int:
        return self._labels.size

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def predefined_test(self) -> np.ndarray:
        return self._test

    def key(self, position: int) -> str:
        return f"{self._files[self._file_ids[position]]}#{self._records[position]}"

    def load(self, positions: np.ndarray) -> torch.Tensor:
        batch = read_rows(self._h5["images"], positions)[:, self._columns].astype(np.float32)
        return normalise(torch.from_numpy(batch), self._mean, self._std)

    def fingerprint(self) -> str:
        """Also covers the chosen bands, which can change without changing the input shape."""
        return hashlib.sha256(f"{super().fingerprint()}|{','.join(self._bands)}".encode()).hexdigest()[:16]


register_source(Source(
    name="droughtwatch", description="Hobbs & Svetlichnaya 2020: 65x65 Landsat patches of Kenya, forage quality",
    load=load, locate=locate, classes=len(CLASS_NAMES), size="97,095", options=("binary", "rgb", "bands")))
