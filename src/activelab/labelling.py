"""What a person decides about a run's items, read from CSV files, and what a person needs to know.

A person works through a run's selection in a spreadsheet (``activelab query --to batch.csv`` writes one,
with an empty ``label`` column) and hands back one file per decision:

* **labels** (columns ``id,label``): teach the labels; rows whose label is still empty are left for later,
  so a half-filled batch file imports as it is. Only items the dataset has no label for take a label
  from a person.
* **skip** (column ``id``): return pending items to the pool; the current model does not offer them again.
* **relabel** (columns ``id,label``): correct labels given before.
* **remove** (column ``id``): take labels back; the items return to the unlabelled pool.

Labels are class names or class indices; other columns (rank, key, score, guess...) are ignored. The
whole file is checked before the run's ledger is written, so a bad row changes nothing. :func:`status`
summarises a run for a person without taking its lock, so it works while the run trains elsewhere.
"""

from __future__ import annotations

import csv
import getpass
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activelab.config import RunConfig
from activelab.data.base import UNLABELLED, Dataset
from activelab.data.state import LabelState
from activelab.errors import ConfigError, DataError, StateError, UserError

#: The decisions a file can hold, and the Run method each one calls.
OPERATIONS = ("teach", "skip", "relabel", "remove")
#: Pending items and history entries :func:`status` lists in full (the rest are counted).
STATUS_ITEMS = 5


@dataclass(frozen=True)
class Applied:
    """What one file changed: ``op`` (teach, skip, relabel, remove), the ids, their class indices (teach and
    relabel), the rows left for later (a labels file's rows with an empty label) and who decided."""

    op: str
    ids: np.ndarray
    labels: np.ndarray | None
    left_for_later: int
    annotator: str | None


def _rows(path: Path, columns: tuple[str, ...], wanted: str) -> list[tuple[int, dict]]:
    """``(line, row)`` pairs of the CSV file ``path`` after checking that its header has ``columns``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a CSV file with the columns {wanted}.")
    if not path.is_file():
        raise DataError(f"{path} does not exist; give a CSV file with the columns {wanted}.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            missing = [column for column in columns if column not in reader.fieldnames]
            if missing:
                raise DataError(f"{path} has no column {' or '.join(missing)}; it needs the columns {wanted}.")
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read as a CSV file ({error}).") from None
    rows = [(line, row) for line, row in rows if any((value or "").strip() for value in row.values()
                                                      if isinstance(value, str))]
    if not rows:
        raise DataError(f"{path} has no rows below its header; add one row per item.")
    return rows


def _ids(path: Path, rows: list[tuple[int, dict]]) -> list[int]:
    """The ``id`` of every row, checked to be whole numbers that appear once."""
    seen: dict[int, int] = {}
    for line, row in rows:
        text = (row.get("id") or "").strip()
        if not (text.isascii() and text.isdigit()):
            raise DataError(f"{path} line {line}: id {text!r} is not a whole number.")
        item = int(text)
        if item in seen:
            raise DataError(f"{path} line {line}: the same id appears twice ({item}, also on line {seen[item]}).")
        seen[item] = line
    return list(seen)


def read_label_file(path: Path, dataset: Dataset, *, allow_empty: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids, class indices and the number of rows with an empty label, from a CSV with columns ``id,label``.

    Rows with an empty label are left out (``allow_empty``) or refused. Labels are class names or indices.
    """
    path = Path(path)
    rows = _rows(path, ("id", "label"), "id,label")
    index_of = dataset.class_index()
    ids = _ids(path, rows)
    kept_ids, labels, empty = [], [], 0
    for item, (line, row) in zip(ids, rows):
        text = (row.get("label") or "").strip()
        if not text:
            if not allow_empty:
                raise DataError(f"{path} line {line}: id {item} has an empty label; give the corrected label or "
                                "leave the row out.")
            empty += 1
            continue
        if text not in index_of:
            raise DataError(f"{path} line {line}: label {text!r} is not one of the classes "
                            f"{', '.join(dataset.class_names)}.")
        kept_ids.append(item)
        labels.append(index_of[text])
    return np.array(kept_ids, dtype=np.int64), np.array(labels, dtype=np.int64), empty


def read_id_file(path: Path) -> np.ndarray:
    """The ids of a CSV with an ``id`` column (other columns are ignored)."""
    path = Path(path)
    return np.array(_ids(path, _rows(path, ("id",), "id")), dtype=np.int64)


def default_annotator() -> str | None:
    """The user's login name, or None where the system has none (a container without a user entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def apply_file(run_dir: Path, op: str, path: Path, *, annotator: str | None = None) -> Applied:
    """Apply the decisions in the CSV file ``path`` to the run in ``run_dir`` (``op``: one of :data:`OPERATIONS`).

    The file is read and checked in full, then the run's step checks the ids against the ledger under the
    run's lock; either refusal leaves the ledger as it was. ``annotator`` (default: the user's login
    name) is kept with the change in the run's history.
    """
    from activelab.run import Run

    if op not in OPERATIONS:
        raise ConfigError(f"unknown operation {op!r}; use one of {', '.join(OPERATIONS)}.")
    with_labels = op in ("teach", "relabel")
    RunConfig.load_saved(Path(run_dir))  # fail fast: a run directory, then a readable file, then the slow open
    _rows(Path(path), ("id", "label") if with_labels else ("id",), "id,label" if with_labels else "id")
    run = Run.open(run_dir, progress=False)
    annotator = annotator or default_annotator()
    labels, empty = None, 0
    if with_labels:
        ids, labels, empty = read_label_file(path, run.dataset, allow_empty=op == "teach")
        if not ids.size:
            raise DataError(f"{path} has no label filled in ({empty} row(s) with an empty label); fill in the "
                            "label column first.")
    else:
        ids = read_id_file(path)
    if op == "teach":
        known = ids[(ids >= 0) & (ids < len(run.dataset))]
        already = known[run.dataset.labels[known] != UNLABELLED]
        if already.size:
            raise StateError(f"id {int(already[0])} already has a label in the dataset; only unlabelled items "
                             "take labels from a person.")
        run.teach(ids, labels, annotator=annotator)
    elif op == "relabel":
        run.relabel(ids, labels, annotator=annotator)
    elif op == "skip":
        run.skip(ids, annotator=annotator)
    else:
        run.remove(ids, annotator=annotator)
    return Applied(op, ids, labels, empty, annotator)


def import_labels(run_dir: Path, label_file: Path, *, annotator: str | None = None) -> int:
    """Teach the labels in ``label_file`` to the run in ``run_dir``; return how many (see :func:`apply_file`)."""
    return int(apply_file(run_dir, "teach", label_file, annotator=annotator).ids.size)


# ------------------------------------------------------------------------------------------ status


def offline_dataset(config: RunConfig) -> Dataset:
    """The run's dataset, loaded as the run loads it but never downloading."""
    from activelab.data.sources import get_source

    source = get_source(config.data_class)
    options = config.source_options()
    if "download_missing" in source.options:
        options.setdefault("download_missing", False)
    return source.load(Path(config.data_dir) if config.data_dir else None, **options)


def status(run_dir: Path) -> dict:
    """What a person needs to know about the run in ``run_dir``, as a JSON-ready dict.

    Keys: ``run``, ``run_dir``, ``dataset``, ``strategy``, ``model``, ``seed``, ``classes``; ``labelled``
    (``total`` and ``per_class``); ``pool`` (unlabelled items left), ``val``, ``test``; ``pending`` (None,
    or ``round``, ``strategy``, ``count`` and ``items``: rank, id, key, score, guess, confidence);
    ``skipped_this_round`` (ids); ``rounds`` (how many models were trained); ``last_round`` (the latest
    round's record, or None); ``stale`` (the labels changed since the latest model was trained, or there
    is none yet); ``history`` (every change to the labels, oldest first); ``note`` (why keys and class
    names are missing when the dataset cannot be read, else None). Reads the ledger without the run's
    lock (it is replaced atomically), so it works while the run is busy elsewhere.
    """
    run_dir = Path(run_dir)
    config = RunConfig.load_saved(run_dir)
    state = LabelState.load(run_dir / "state.json")
    note, dataset = None, None
    try:
        dataset = offline_dataset(config)
    except UserError as error:
        note = f"the dataset cannot be read, so keys and class names are missing ({str(error).rstrip('.')})."
    names = list(dataset.class_names) if dataset is not None else \
        [str(index) for index in range(int(state.labelled_labels.max(initial=-1)) + 1)]
    counts = np.bincount(state.labelled_labels, minlength=len(names)) if state.n_labelled else np.zeros(len(names))
    pending = None
    if state.pending:
        ids = [int(item) for item in state.pending["ids"]]
        scores = state.pending.get("scores") or [None] * len(ids)
        guesses = state.pending.get("guesses")
        confidences = state.pending.get("confidences")
        items = [{"rank": rank, "id": item, "key": dataset.key(item) if dataset is not None else None,
                  "score": scores[rank],
                  "guess": None if guesses is None else names[guesses[rank]] if guesses[rank] < len(names) else
                  str(guesses[rank]),
                  "confidence": None if confidences is None else confidences[rank]}
                 for rank, item in enumerate(ids)]
        pending = {"round": state.pending["round"], "strategy": state.pending.get("strategy"), "count": len(ids),
                   "items": items}
    selection_round = int(state.pending["round"]) if state.pending else len(state.rounds) - 1
    last = state.rounds[-1] if state.rounds else None
    return {
        "run": config.name, "run_dir": str(run_dir), "dataset": config.data_class, "strategy": config.sampling_method,
        "model": config.model_class, "seed": config.seed, "classes": names,
        "labelled": {"total": state.n_labelled, "per_class": {name: int(count) for name, count in zip(names, counts)}},
        "pool": int(state.pool_ids.size), "val": int(state.val_ids.size), "test": int(state.test_ids.size),
        "pending": pending, "skipped_this_round": state.skipped_in(selection_round).tolist(),
        "rounds": len(state.rounds), "last_round": None if last is None else last.to_dict(),
        "stale": last is None or last.labels_digest != state.labels_digest(),
        "history": list(state.events), "note": note,
    }


__all__ = ["Applied", "OPERATIONS", "apply_file", "default_annotator", "import_labels", "read_id_file",
           "read_label_file", "status"]
