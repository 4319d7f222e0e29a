"""MNIST and Fashion-MNIST from the official idx files.

Files are looked for in ``--data-dir``, then in ``$ACTIVELAB_DATA/<name>``, ``~/.cache/activelab/<name>``
and ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package installs there). When
they are nowhere and ``download_missing`` is allowed, the official files are fetched into the cache with
torchvision's download helpers and their MD5 checked; offline, the error says where to put them.

The official test split (10,000 images) is exposed as :attr:`Dataset.predefined_test`, and ids
0..59,999 are the training images, 60,000..69,999 the test images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activelab.data.base import ArrayDataset, Dataset
from activelab.data.idx import read_idx
from activelab.data.options import flag_option
from activelab.data.sources import Source, cache_root, data_roots, register_source
from activelab.errors import DataError, DatasetNotFoundError

log = logging.getLogger(__name__)

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_TIMEOUT = 60  # seconds without an answer before a mirror counts as unreachable


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Where an idx dataset comes from and how to normalise it."""

    name: str
    title: str
    urls: tuple[str, ...]
    md5: dict[str, str]
    class_names: tuple[str, ...]
    mean: float
    std: float


FASHION = IdxDatasetSpec(
    name="fashion-mnist", title="Fashion-MNIST",
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    mean=0.2860, std=0.3530)

MNIST = IdxDatasetSpec(
    name="mnist", title="MNIST",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    class_names=tuple(str(digit) for digit in range(10)),
    mean=0.1307, std=0.3081)


def _file_in(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(spec: IdxDatasetSpec, data_dir: Path | None) -> Path | None:
    """The first folder holding all four idx files (gzipped or not), or None."""
    folders = [Path(data_dir)] if data_dir is not None else [root / spec.name for root in data_roots()]
    for folder in folders:
        if all(_file_in(folder, stem) for stem in FILES):
            return folder
    return None


def download(spec: IdxDatasetSpec, target: Path | None = None) -> Path:
    """Fetch the four official files into ``target`` (default: the cache) and check their MD5.

    Uses torchvision's download helpers. A file already in ``target`` with the right MD5 is kept. Each
    download goes to a temporary folder inside ``target`` and is moved into place only once its MD5
    matches, so an interrupted or damaged download never looks like a dataset; the mirrors in
    ``spec.urls`` are tried in order.

    Raises
    ------
    DatasetNotFoundError
        When a file cannot be fetched from any mirror, or every mirror sends a file with the wrong MD5.
    """
    from torchvision.datasets.utils import check_integrity

    target = Path(target) if target is not None else cache_root() / spec.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetNotFoundError(f"{spec.title} is not on this machine and cannot be downloaded into {target} "
                                   f"({error.strerror}); set ACTIVELAB_CACHE to a folder you can write to, or put "
                                   f"{', '.join(f + '.gz' for f in FILES)} in {spec.name}/ inside the folder named "
                                   "by ACTIVELAB_DATA.") from None
    for filename, md5 in spec.md5.items():
        if check_integrity(target / filename, md5):
            continue
        problems = []
        for base in spec.urls:
            problem = _fetch(base + filename, target / filename, md5)
            if problem is None:
                break
            problems.append(problem)
        else:
            raise DatasetNotFoundError(f"{spec.title} is not on this machine and could not be downloaded "
                                       f"({'; '.join(problems)}); {_where_to_put(spec, str(target))}.")
    return target


def _fetch(url: str, destination: Path, md5: str) -> str | None:
    """Download ``url`` to ``destination`` if its MD5 is ``md5``; None on success, else what went wrong."""
    from torchvision.datasets.utils import calculate_md5, download_url

    log.info("downloading %s", url)
    staging = destination.with_name(f".{destination.name}.partial{os.getpid()}")
    try:
        with _socket_timeout(_TIMEOUT):
            download_url(url, staging, destination.name)
        actual = calculate_md5(staging / destination.name)
        if actual != md5:
            return f"{url} sent a file whose MD5 is {actual}, not {md5}"
        os.replace(staging / destination.name, destination)
        return None
    except urllib.error.HTTPError as error:
        return f"{url} answered HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        return f"{url} could not be reached ({error.reason})"
    except (OSError, ValueError, RuntimeError) as error:
        return f"{url} failed ({error})"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened meanwhile a timeout (torchvision's download sets none), unless one is set already."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _where_to_put(spec: IdxDatasetSpec, folders: str) -> str:
    """Where a user can put the files by hand, true for both ``activelab run`` and ``activelab fetch``."""
    return (f"put {', '.join(f + '.gz' for f in FILES)} in {folders} (or in {spec.name}/ inside the folder "
            "named by the environment variable ACTIVELAB_DATA) and run the command again")


def load(spec: IdxDatasetSpec, data_dir: Path | None = None, *, download_missing: bool | str = True) -> Dataset:
    """Build the 70,000-image dataset (train then test) from local files, downloading if allowed.

    ``download_missing`` may come from the command line as text (``--source-option download_missing=false``).
    """
    download_missing = flag_option("download_missing", download_missing)
    folder = locate(spec, data_dir)
    if folder is None:
        if data_dir is not None:
            raise DatasetNotFoundError(f"{data_dir} does not hold the {spec.title} files "
                                       f"{', '.join(f + '.gz' for f in FILES)}; put them there or point --data-dir "
                                       "at the folder that holds them.")
        if not download_missing:
            searched = ", ".join(str(root / spec.name) for root in data_roots())
            raise DatasetNotFoundError(f"{spec.title} was not found in {searched}; "
                                       f"{_where_to_put(spec, 'one of those folders')}.")
        folder = download(spec)
    cache = cache_root() / "idx"
    arrays = [read_idx(_file_in(folder, stem), cache) for stem in FILES]
    train_images, train_labels, test_images, test_labels = arrays
    if train_images.shape[0] != train_labels.shape[0] or test_images.shape[0] != test_labels.shape[0]:
        raise DataError(f"{folder} has image and label files of different lengths.")
    images = _ConcatenatedRows(train_images, test_images)
    labels = np.concatenate([train_labels, test_labels]).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(spec.class_names)):
        raise DataError(f"{folder} has labels outside 0..{len(spec.class_names) - 1}.")
    test_mask = np.zeros(labels.size, dtype=bool)
    test_mask[train_labels.shape[0]:] = True
    return ArrayDataset(spec.name, images, labels, spec.class_names, mean=(spec.mean,), std=(spec.std,),
                        scale=1 / 255, predefined_test=test_mask)


class _ConcatenatedRows:
    """Two memory-mapped arrays seen as one along the first axis, without copying either."""

    def __init__(self, first: np.ndarray, second: np.ndarray):
        self.parts = (first, second)
        self.shape = (first.shape[0] + second.shape[0], *first.shape[1:])
        self.ndim = first.ndim
        self.dtype = first.dtype

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        boundary = self.parts[0].shape[0]
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        in_first = rows < boundary
        out[in_first] = self.parts[0][rows[in_first]]
        out[~in_first] = self.parts[1][rows[~in_first] - boundary]
        return out


for _spec, _description in ((FASHION, "Zalando's 28x28 grayscale clothing images, 60,000 train + 10,000 test"),
                            (MNIST, "28x28 grayscale handwritten digits, 60,000 train + 10,000 test")):
    register_source(Source(
        name=_spec.name, description=_description, classes=len(_spec.class_names), size="70,000",
        load=lambda data_dir=None, _spec=_spec, **options: load(_spec, data_dir, **options),
        locate=lambda data_dir=None, _spec=_spec: locate(_spec, data_dir), options=("download_missing",)))
