"""CSV tables of images and labels (DeepWeeds' ``labels.csv``, Cassava's ``train.csv``, the image-csv source).

Every problem is a :class:`~activelab.errors.DataError` naming the file, and the line and value when
there is one, so a user can correct the row.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from activelab.errors import DataError

#: One CSV row: column name to value (None where the row is shorter than the header).
Row = Mapping[str, str | None]


def read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, Row]]:
    """The rows of CSV file ``path`` as ``(line number, {column: value})``, after checking its header.

    Header names are stripped of spaces and a UTF-8 byte-order mark; a row shorter than the header has
    None in its missing columns.

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


def cell(path: Path, line: int, row: Row, column: str) -> str:
    """The stripped value of ``column`` in a row from :func:`read_csv`, which must be present."""
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
        The folder that the names in ``path_column`` are relative to (absolute names are kept).
    path_column, label_column : str
        The columns holding the image names and the labels.
    label_index : mapping of str to int
        Every accepted label value and its class index (``""`` may map to UNLABELLED).

    Returns
    -------
    names : list of str
        The image names, in the order of the rows.
    labels : ndarray of int64
        The class index of each image.

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
