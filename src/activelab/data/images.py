"""Datasets of image files (JPEG, PNG, ...), decoded with PIL a batch at a time.

Used by DeepWeeds, Cassava and the image-folder and image-csv sources. Images are converted to RGB (or
grey), resized to one size and normalised with the ImageNet statistics, which is what pretrained
backbones expect. A file that cannot be decoded is a :class:`~activelab.errors.DataError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activelab.data.base import Dataset
from activelab.data.transforms import (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, IMAGENET_MEAN, IMAGENET_STD,
                                       Preprocess, to_tensor)
from activelab.errors import DataError

#: File name endings recognised as images (compared in lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_DECODE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


class ImageFileDataset(Dataset):
    """Images stored one per file, decoded with PIL only when a batch is loaded.

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
        return self._preprocess([self._decode(self._files[p]) for p in positions])

    def _decode(self, name: str) -> torch.Tensor:
        path = self._root / name
        height, width = self.input_shape[1:]
        try:
            with Image.open(path) as image:
                image.draft(self._mode, (width, height))  # JPEG: decode at a reduced scale when much larger
                return to_tensor(image.convert(self._mode))
        except _DECODE_ERRORS as error:
            raise DataError(f"{path} could not be decoded as an image ({error}); replace or remove the file.") from None


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of the image file at ``path``, reading only its header."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except _DECODE_ERRORS as error:
        raise DataError(f"{path} could not be decoded as an image ({error}); replace or remove the file.") from None


def image_preprocess(size: tuple[int, int], grayscale: bool) -> Preprocess:
    """Resize to ``size`` and normalise with the ImageNet statistics (grey: their channel average)."""
    if grayscale:
        return Preprocess(size, IMAGENET_GREY_MEAN, IMAGENET_GREY_STD)
    return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD)
