"""The image-csv source: the user's images listed in a CSV file of ``path,label`` rows.

Pointed at the CSV file with ``--data-dir`` (``locate`` returns None without it). ``path`` is relative to
the CSV's folder, or absolute. An empty label marks an unlabelled item
(:data:`~activelab.data.base.UNLABELLED`), which only a person can label. Classes are the option
``classes="a,b,c"`` when given (then any other label is an error), otherwise the distinct labels,
sorted (numerically when all are integers). Images are decoded as by the image-folder source (options
``size`` and ``grayscale``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activelab.data.base import UNLABELLED, Dataset
from activelab.data.images import ImageFileDataset, image_preprocess, image_size
from activelab.data.options import check_options, flag_option, given_path, names_option, required_path, size_option
from activelab.data.sources import Source, register_source
from activelab.data.tables import cell, read_csv, read_image_table
from activelab.errors import ConfigError


def _sorted_labels(values: set[str]) -> list[str]:
    """Label values in numeric order when all are integers, else in string order."""
    if all(value.lstrip("-").isdigit() for value in values):
        return sorted(values, key=int)
    return sorted(values)


def load(data_dir: Path | None = None, **options: Any) -> Dataset:
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


# classes=None: the classes are read from the user's data (or the classes option).
register_source(Source(
    name="image-csv", description="your images listed in a CSV of path,label (empty label: unlabelled)",
    load=load, locate=given_path, classes=None, size="any", options=("size", "grayscale", "classes")))
