"""The image-folder source: the user's images in a folder with one sub-folder per class.

Pointed at its folder with ``--data-dir`` (``locate`` returns None without it). Classes are the
sub-folder names in sorted order; the image files inside each (searched recursively, hidden files
skipped) are sorted by relative path, so the same folder always gives the same ids. Keys are the paths
relative to the folder. Images are converted to RGB (or grey with ``grayscale=true``), resized to
``size`` (default: the size of the first image) and normalised with the ImageNet statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from activelab.data.base import Dataset
from activelab.data.images import IMAGE_SUFFIXES, ImageFileDataset, image_preprocess, image_size
from activelab.data.options import check_options, flag_option, given_path, required_path, size_option
from activelab.data.sources import Source, register_source
from activelab.errors import DataError, DatasetNotFoundError

_WANTED = "a folder with one sub-folder of images per class"


def _images_in(folder: Path, class_name: str) -> list[str]:
    """Sorted paths, relative to ``folder``, of the image files under ``folder/class_name`` (hidden ones skipped)."""
    return sorted(path.relative_to(folder).as_posix() for path in (folder / class_name).rglob("*")
                  if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
    """A dataset from a folder with one sub-folder of images per class (options ``size``, ``grayscale``)."""
    check_options("image-folder", options, ("size", "grayscale"))
    folder = required_path(data_dir, "image-folder", _WANTED)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder; point --data-dir at {_WANTED}.")
    classes = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    files, labels = [], []
    for index, class_name in enumerate(classes):
        found = _images_in(folder, class_name)
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"{folder} holds no images in class sub-folders; put each class's images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))}) in a sub-folder named after it.")
    grayscale = flag_option("grayscale", options.get("grayscale", False))
    size = size_option(options.get("size")) or image_size(folder / files[0])
    return ImageFileDataset("image-folder", folder, files, np.array(labels, dtype=np.int64), classes,
                            image_preprocess(size, grayscale), grayscale=grayscale)


# classes=None: the classes are read from the user's data.
register_source(Source(
    name="image-folder", description="your images, one sub-folder per class (--data-dir FOLDER)",
    load=load, locate=given_path, classes=None, size="any", options=("size", "grayscale")))
