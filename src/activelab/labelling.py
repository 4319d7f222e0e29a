"""Labels from a person: import a CSV of ``id,label`` rows into a run's ledger.

When a strategy selects items the dataset has no label for, the run stops with the selection saved.
A person labels those items (in a spreadsheet today, in the labelling app later) and this module appends
the labels to the run's ledger at once, under the run's lock, before anything else happens; then
``activelab run --resume DIR`` continues. Labels are class names or class indices.
"""

from __future__ import annotations

import csv
import getpass
from pathlib import Path

import numpy as np

from activelab.data.base import UNLABELLED, Dataset
from activelab.errors import DataError, StateError
from activelab.run import Run


def read_label_file(path: Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Ids and class indices from a CSV with columns ``id`` and ``label`` (class name or index)."""
    path = Path(path)
    index_of = {name: index for index, name in enumerate(dataset.class_names)}
    index_of.update({str(index): index for index in range(dataset.num_classes)})
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"id", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path} has no column {' or '.join(sorted(missing))}; it needs the columns id,label.")
            rows = [(line, row) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read ({error}).") from None
    ids, labels = [], []
    for line, row in rows:
        text_id, text_label = (row.get("id") or "").strip(), (row.get("label") or "").strip()
        if not text_id.isdigit():
            raise DataError(f"{path} line {line}: id {text_id!r} is not a whole number.")
        if text_label not in index_of:
            raise DataError(f"{path} line {line}: label {text_label!r} is not one of the classes "
                            f"{', '.join(dataset.class_names)}.")
        ids.append(int(text_id))
        labels.append(index_of[text_label])
    return np.array(ids, dtype=np.int64), np.array(labels, dtype=np.int64)


def import_labels(run_dir: Path, label_file: Path, *, annotator: str | None = None) -> int:
    """Teach the labels in ``label_file`` to the run in ``run_dir``; return how many.

    Only items the dataset has no label for may be labelled here; the whole file is checked before the
    ledger is written, so a bad row changes nothing. ``annotator`` (default: the user's login name) is
    kept with the labels in the run's history.
    """
    run = Run.open(run_dir, progress=False)
    ids, labels = read_label_file(label_file, run.dataset)
    known = ids[(ids >= 0) & (ids < len(run.dataset))]
    already = known[run.dataset.labels[known] != UNLABELLED]
    if already.size:
        raise StateError(f"id {int(already[0])} already has a label in the dataset; only unlabelled items "
                         "take labels from a person.")
    run.teach(ids, labels, annotator=annotator or getpass.getuser())
    return int(ids.size)
