"""Cassava leaf disease: 21,397 field photos of cassava leaves in five classes (Kaggle, 2020).

Smartphone photos taken by farmers in Uganda and annotated by experts of the National Crops Resources
Research Institute with the Makerere AI Lab [1]_: four diseases (bacterial blight, brown streak,
green mottle, mosaic) or healthy. The competition files are ``train.csv`` (columns ``image_id,label``,
label 0..4) and a ``train_images/`` folder of 800x600 JPEGs; the competition's test labels were never
published, so there is no predefined test split. Images are resized to 224x224 (option ``size``; JPEGs
are decoded at reduced scale first, which is much faster) and normalised with the ImageNet statistics.

Files are looked for in ``--data-dir``, then ``$ACTIVELAB_DATA/cassava``, ``~/.cache/activelab/cassava`` and
``/usr/share/datasets/cassava``.

References
----------
.. [1] Mwebaze, E., Gebru, T., Frome, A., Nsumba, S. & Tusubira, J. (2019). iCassava 2019 Fine-Grained
       Visual Categorization Challenge. arXiv:1908.02900. The 2020 data: Kaggle competition
       "Cassava Leaf Disease Classification".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activelab.data.base import Dataset
from activelab.data.images import ImageFileDataset, image_preprocess
from activelab.data.options import check_options, size_option
from activelab.data.sources import Source, data_roots, register_source
from activelab.data.tables import read_image_table
from activelab.errors import DatasetNotFoundError

#: Names from the competition's ``label_num_to_disease_map.json``.
CLASS_NAMES = ("Cassava Bacterial Blight (CBB)", "Cassava Brown Streak Disease (CBSD)",
               "Cassava Green Mottle (CGM)", "Cassava Mosaic Disease (CMD)", "Healthy")
URL = "https://www.kaggle.com/c/cassava-leaf-disease-classification/data"


def locate(data_dir: Path | None = None) -> Path | None:
    """The first folder holding ``train.csv`` and ``train_images/``, or None."""
    folders = [Path(data_dir)] if data_dir is not None else [root / "cassava" for root in data_roots()]
    for folder in folders:
        if (folder / "train.csv").is_file() and (folder / "train_images").is_dir():
            return folder
    return None


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
    """Build the Cassava dataset in the order of ``train.csv`` (option ``size``, default 224).

    Raises
    ------
    DatasetNotFoundError
        When the files are not in ``data_dir`` or the data roots.
    DataError
        When ``train.csv`` lacks a column, names a missing image or has a label outside 0..4.
    """
    check_options("cassava", options, ("size",))
    size = size_option(options.get("size")) or (224, 224)
    folder = locate(data_dir)
    if folder is None:
        where = str(data_dir) if data_dir is not None else ", ".join(str(r / "cassava") for r in data_roots())
        raise DatasetNotFoundError(f"Cassava (train.csv and train_images/) was not found in {where}; download the "
                                   f"competition data from {URL} and unzip it into one of those folders or pass "
                                   "--data-dir.")
    label_index = {str(index): index for index in range(len(CLASS_NAMES))}
    names, labels = read_image_table(folder / "train.csv", folder / "train_images", "image_id", "label", label_index)
    return ImageFileDataset("cassava", folder / "train_images", names, labels, CLASS_NAMES,
                            image_preprocess(size, grayscale=False))


register_source(Source(
    name="cassava", description="Kaggle 2020: field photos of cassava leaves, 4 diseases + healthy",
    load=load, locate=locate, classes=len(CLASS_NAMES), size="21,397", options=("size",)))
