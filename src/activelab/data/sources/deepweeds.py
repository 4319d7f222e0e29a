"""DeepWeeds: 17,509 photos of eight weed species of northern Australia and of their surroundings.

Olsen et al. [1]_ photographed weeds in situ at eight rangeland sites; every 256x256 JPEG is labelled
with one of eight species or "Negative" (no target weed), which is more than half of the images. The
published files are ``labels.csv`` (columns ``Filename,Label,Species``, label 0..8) and an ``images/``
folder. The repository's split files ``train_subset0.csv``/``test_subset0.csv`` (same columns), when
present beside ``labels.csv``, define the predefined test split (the first of the paper's five folds).
Images are resized to 224x224 (option ``size``) and normalised with the ImageNet statistics, as for the
paper's ImageNet-pretrained ResNet-50.

Files are looked for in ``--data-dir``, then ``$ACTIVELAB_DATA/deepweeds``, ``~/.cache/activelab/deepweeds``
and ``/usr/share/datasets/deepweeds``; ``labels.csv`` and the split files may also sit in a ``labels/``
sub-folder, as in the repository.

References
----------
.. [1] Olsen, A., Konovalov, D. A., Philippa, B., Ridd, P., Wood, J. C., Johns, J., Banks, W., Girgenti, B.,
       Kenny, O., Whinney, J., Calvert, B., Rahimi Azghadi, M. & White, R. D. (2019). DeepWeeds: A
       Multiclass Weed Species Image Dataset for Deep Learning. Scientific Reports 9, 2058.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from activelab.data.base import Dataset
from activelab.data.images import ImageFileDataset, image_preprocess
from activelab.data.options import check_options, size_option
from activelab.data.sources import Source, data_roots, register_source
from activelab.data.tables import cell, read_csv, read_image_table
from activelab.errors import DataError, DatasetNotFoundError

CLASS_NAMES = ("Chinee apple", "Lantana", "Parkinsonia", "Parthenium", "Prickly acacia", "Rubber vine",
               "Siam weed", "Snake weed", "Negative")
URL = "https://github.com/AlexOlsen/DeepWeeds"
_WANTED = "images/ and labels.csv"


def _labels_file(folder: Path) -> Path | None:
    for candidate in (folder / "labels.csv", folder / "labels" / "labels.csv"):
        if candidate.is_file():
            return candidate
    return None


def locate(data_dir: Path | None = None) -> Path | None:
    """The first folder holding ``images/`` and ``labels.csv`` (or ``labels/labels.csv``), or None."""
    folders = [Path(data_dir)] if data_dir is not None else [root / "deepweeds" for root in data_roots()]
    for folder in folders:
        if (folder / "images").is_dir() and _labels_file(folder) is not None:
            return folder
    return None


def _test_mask(labels_file: Path, names: list[str]) -> np.ndarray | None:
    """Mask of the images listed in ``test_subset0.csv`` beside ``labels_file``, or None when it is absent."""
    split = labels_file.with_name("test_subset0.csv")
    if not split.is_file():
        return None
    position = {name: index for index, name in enumerate(names)}
    mask = np.zeros(len(names), dtype=bool)
    for line, row in read_csv(split, ("Filename",)):
        name = cell(split, line, row, "Filename")
        if name not in position:
            raise DataError(f"{split} line {line}: image {name!r} is not in {labels_file.name}; the split file "
                            "belongs to another version of the dataset.")
        mask[position[name]] = True
    return mask


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
    """Build DeepWeeds in the order of ``labels.csv`` (option ``size``, default 224).

    Raises
    ------
    DatasetNotFoundError
        When the files are not in ``data_dir`` or the data roots.
    DataError
        When a CSV lacks a column, names a missing image or has a label outside 0..8.
    """
    check_options("deepweeds", options, ("size",))
    size = size_option(options.get("size")) or (224, 224)
    folder = locate(data_dir)
    if folder is None:
        where = str(data_dir) if data_dir is not None else ", ".join(str(r / "deepweeds") for r in data_roots())
        raise DatasetNotFoundError(f"DeepWeeds ({_WANTED}) was not found in {where}; download images.zip and "
                                   f"labels.csv from {URL} and put them in one of those folders or pass --data-dir.")
    labels_file = _labels_file(folder)
    label_index = {str(index): index for index in range(len(CLASS_NAMES))}
    names, labels = read_image_table(labels_file, folder / "images", "Filename", "Label", label_index)
    return ImageFileDataset("deepweeds", folder / "images", names, labels, CLASS_NAMES,
                            image_preprocess(size, grayscale=False), predefined_test=_test_mask(labels_file, names))


register_source(Source(
    name="deepweeds", description="Olsen et al. 2019: 256x256 photos of 8 weed species + negatives",
    load=load, locate=locate, classes=len(CLASS_NAMES), size="17,509", options=("size",)))
