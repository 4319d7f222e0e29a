"""The label ledger of a run: which ids are in the pool, labelled, validation or test, and the history.

The splits are drawn once from the run's seed and never change:

* **test** ids are only used to report metrics;
* **val** ids only for early stopping and model choice;
* **holdout** ids only to train helper heads such as active transfer learning's correct/incorrect
  classifier, so no split is used for two purposes. The holdout is reserved whether or not the
  strategy uses it, from a random stream of its own, so every strategy run with the same seed starts
  from the same test, validation, pool and initial labels (paired comparisons);
* **pool** ids are the only candidates for selection; the labelled set grows out of the pool.

Each labelled id records its label and the round it was acquired in. Every change to the labels is an
operation with a history entry (``events``: when, what, which ids, which labels, by whom): *teach* labels
pool items, *skip* sends pending items back to the pool for the rest of the round, *relabel* corrects a
label, *remove* returns a labelled item to the pool. The ledger is saved as JSON with a format version and
a SHA-256 checksum, atomically, after every change.

A ledger made with :meth:`LabelState.create_appendable` belongs to a dataset that grows (the labelling
app's project, where a person uploads images after the run exists). It records how many items it knows
(``n_items``): items appended later get the next ids and go to the unlabelled pool (:meth:`append_items`),
so every id stays stable. Its test set is not taken from the dataset's labels, which do not exist: it is
drawn at random from the unlabelled items (:meth:`draw_test`, never from a selection) and labelled by a
person (``test_labels``, *teach-test* / *remove-test* in the history). It has no validation or holdout
split, so training on it runs a fixed number of steps (see :class:`~activelab.training.TrainSettings`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from activelab.data.base import UNLABELLED
from activelab.errors import BudgetExceededError, ConfigError, StateError
from activelab.io import atomic_write_json
from activelab.records import RoundRecord

FORMAT = "activelab.label-state"
VERSION = 2
_SPLIT_STREAM = 0
#: Default holdout size: at most this many items, and at most a tenth of the labelled items left over.
DEFAULT_HOLDOUT = 1000


@dataclass
class LabelState:
    """The ledger; create it with :meth:`create`, persist it with :meth:`save` / :meth:`load`.

    All id arrays are sorted int64 except ``labelled_ids``, which keeps acquisition order.
    ``skipped_ids`` / ``skipped_rounds`` hold the items a person skipped and the round they were skipped
    in; ``pending`` is the selection waiting for labels (a dict with ``round``, ``ids``, ``scores``...).
    """

    dataset_fingerprint: str
    seed: int
    train_ids: np.ndarray
    val_ids: np.ndarray
    test_ids: np.ndarray
    holdout_ids: np.ndarray
    labelled_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labelled_labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labelled_rounds: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    skipped_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    skipped_rounds: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rounds: list[RoundRecord] = field(default_factory=list)
    pending: dict | None = None
    events: list[dict] = field(default_factory=list)
    n_items: int | None = None
    test_labels: np.ndarray | None = None

    @classmethod
    def create_appendable(cls, n_items: int, *, seed: int, dataset_fingerprint: str) -> "LabelState":
        """A ledger for a dataset that grows: all ``n_items`` items start in the pool, with no test,
        validation or holdout split (the test set is drawn later with :meth:`draw_test`)."""
        empty = np.empty(0, np.int64)
        return cls(dataset_fingerprint, seed, np.arange(n_items, dtype=np.int64), empty, empty.copy(), empty.copy(),
                   n_items=int(n_items), test_labels=empty.copy())

    @classmethod
    def create(cls, labels: np.ndarray, *, seed: int, dataset_fingerprint: str = "",
               predefined_test: np.ndarray | None = None, n_val: int = 1000, n_test: int | None = None,
               n_holdout: int | None = None, pool_size: int | None = None) -> "LabelState":
        """Draw the splits of a dataset whose items have ``labels`` (``UNLABELLED`` = no label yet).

        Test ids come from the source's predefined test split when it has one (all of it, or a seeded
        subset of ``n_test``), else ``n_test`` (default 20 %) random labelled items. Validation and holdout
        ids are drawn from the remaining labelled items (``n_holdout`` None: ``DEFAULT_HOLDOUT``, at most
        a tenth of what is left); the pool is the rest (a seeded subset of ``pool_size`` when given).
        Items without a label can only be in the pool. The holdout comes from a stream of its own, so
        its size changes neither the test nor the validation split.
        """
        labels = np.asarray(labels, dtype=np.int64)
        rng = np.random.default_rng([seed, _SPLIT_STREAM])
        everything = np.arange(labels.size, dtype=np.int64)
        if predefined_test is not None:
            test_candidates = everything[predefined_test & (labels != UNLABELLED)]
            rest = everything[~predefined_test]
        else:
            test_candidates = everything[labels != UNLABELLED]
            rest = everything
            n_test = n_test if n_test is not None else test_candidates.size // 5
        test = _draw(rng, test_candidates, n_test, "test set")
        rest = np.setdiff1d(rest, test, assume_unique=True)
        labelled_rest = rest[labels[rest] != UNLABELLED]
        val = _draw(rng, labelled_rest, n_val, "validation set")
        holdout_candidates = np.setdiff1d(labelled_rest, val, assume_unique=True)
        if n_holdout is None:
            n_holdout = min(DEFAULT_HOLDOUT, holdout_candidates.size // 10)
        holdout = _draw(np.random.default_rng([seed, _SPLIT_STREAM, 2]), holdout_candidates, n_holdout, "holdout set")
        pool = np.setdiff1d(rest, np.concatenate([val, holdout]), assume_unique=True)
        if pool_size is not None:
            pool = _draw(rng, pool, pool_size, "pool")
        if pool.size == 0:
            raise BudgetExceededError("no items are left for the pool after the test and validation splits.")
        return cls(dataset_fingerprint, seed, np.sort(pool), np.sort(val), np.sort(test), np.sort(holdout))

    # ------------------------------------------------------------------ queries
    @property
    def pool_ids(self) -> np.ndarray:
        """Sorted ids still unlabelled in the pool (the only candidates for selection)."""
        return np.setdiff1d(self.train_ids, self.labelled_ids, assume_unique=True)

    @property
    def n_labelled(self) -> int:
        """Number of labelled training ids."""
        return int(self.labelled_ids.size)

    @property
    def labelled_test(self) -> tuple[np.ndarray, np.ndarray]:
        """Test ids a person has labelled and their labels (an appendable ledger's test set)."""
        if self.test_labels is None:
            raise ConfigError("this run's test labels come from its dataset, not from a person.")
        given = self.test_labels != UNLABELLED
        return self.test_ids[given], self.test_labels[given]

    def skipped_in(self, round_index: int) -> np.ndarray:
        """Ids skipped during round ``round_index`` (they are not offered again in that round)."""
        return self.skipped_ids[self.skipped_rounds == round_index]

    def labels_digest(self) -> str:
        """A digest of the labelled set (ids and labels): a model trained on another digest is stale."""
        order = np.argsort(self.labelled_ids, kind="stable")
        pairs = np.stack([self.labelled_ids[order], self.labelled_labels[order]])
        return hashlib.sha256(pairs.astype(np.int64).tobytes()).hexdigest()[:16]

    # ------------------------------------------------------------------ changes
    def add(self, ids: np.ndarray, labels: np.ndarray, round_index: int, *, annotator: str | None = None) -> None:
        """Teach ``labels`` for pool ``ids`` acquired in ``round_index`` (pending items among them stop pending).

        Raises ConfigError when an id is not in the pool, already labelled, repeated, or a label is missing.
        """
        ids, labels = _ids_and_labels(ids, labels)
        not_in_pool = ids[~np.isin(ids, self.pool_ids)]
        if not_in_pool.size:
            raise ConfigError(f"id {int(not_in_pool[0])} is not in the unlabelled pool "
                              "(it is labelled already, in val/test, or unknown).")
        if (labels == UNLABELLED).any():
            raise ConfigError(f"id {int(ids[labels == UNLABELLED][0])} was given no label.")
        self.labelled_ids = np.concatenate([self.labelled_ids, ids])
        self.labelled_labels = np.concatenate([self.labelled_labels, labels])
        self.labelled_rounds = np.concatenate([self.labelled_rounds, np.full(ids.size, round_index, np.int64)])
        self._settle_pending(ids)
        self._event("teach", round_index, ids, labels, annotator)

    def skip(self, ids: np.ndarray, round_index: int, *, annotator: str | None = None) -> None:
        """Send pending ``ids`` back to the pool; they are not offered again in round ``round_index``."""
        ids = _unique_ids(ids)
        pending = np.asarray(self.pending["ids"] if self.pending else [], dtype=np.int64)
        not_pending = ids[~np.isin(ids, pending)]
        if not_pending.size:
            raise ConfigError(f"id {int(not_pending[0])} is not in the pending selection, so it cannot be skipped.")
        self.skipped_ids = np.concatenate([self.skipped_ids, ids])
        self.skipped_rounds = np.concatenate([self.skipped_rounds, np.full(ids.size, round_index, np.int64)])
        self._settle_pending(ids)
        self._event("skip", round_index, ids, None, annotator)

    def relabel(self, ids: np.ndarray, labels: np.ndarray, round_index: int, *, annotator: str | None = None) -> None:
        """Correct the labels of labelled ``ids`` (a person's mistake); the history keeps the old ones."""
        ids, labels = _ids_and_labels(ids, labels)
        positions = self._labelled_positions(ids, "relabelled")
        if (labels == UNLABELLED).any():
            raise ConfigError(f"id {int(ids[labels == UNLABELLED][0])} was given no label.")
        previous = self.labelled_labels[positions].copy()
        self.labelled_labels = self.labelled_labels.copy()
        self.labelled_labels[positions] = labels
        self._event("relabel", round_index, ids, labels, annotator, previous=previous.tolist())

    def remove(self, ids: np.ndarray, round_index: int, *, annotator: str | None = None) -> None:
        """Take the labels of labelled ``ids`` back: the items return to the unlabelled pool."""
        ids = _unique_ids(ids)
        positions = self._labelled_positions(ids, "removed")
        previous = self.labelled_labels[positions].tolist()
        keep = np.ones(self.labelled_ids.size, dtype=bool)
        keep[positions] = False
        self.labelled_ids, self.labelled_labels, self.labelled_rounds = (
            self.labelled_ids[keep], self.labelled_labels[keep], self.labelled_rounds[keep])
        self._event("remove", round_index, ids, None, annotator, previous=previous)

    # ------------------------------------------------------------------ a growing dataset and its test set
    def append_items(self, n_items: int, dataset_fingerprint: str) -> np.ndarray:
        """Put the items ``self.n_items .. n_items - 1`` of a grown dataset into the pool; return their ids."""
        if self.n_items is None:
            raise StateError("this run's dataset has a fixed size, so no items can be added to it.")
        if n_items < self.n_items:
            raise StateError(f"the dataset has {n_items} items but the run knew {self.n_items}; items were "
                             "removed from it, so the ledger is left untouched.")
        new = np.arange(self.n_items, n_items, dtype=np.int64)
        self.train_ids = np.concatenate([self.train_ids, new])  # still sorted: new ids are the largest
        self.n_items, self.dataset_fingerprint = int(n_items), dataset_fingerprint
        return new

    def draw_test(self, n: int, round_index: int, *, annotator: str | None = None) -> np.ndarray:
        """Move ``n`` random unlabelled pool items, none of them pending, to the test set; return their ids.

        The draw is seeded by the ledger's seed and the current test size, so it does not depend on what
        the process did before. The items wait for a person's labels (:meth:`label_test`).
        """
        if self.test_labels is None:
            raise ConfigError("this run's test set comes from its dataset; only a run on a growing dataset "
                              "draws test items for a person to label.")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"the number of test items to draw must be a whole number >= 1, got {n!r}.")
        pending = np.asarray(self.pending["ids"] if self.pending else [], dtype=np.int64)
        candidates = np.setdiff1d(self.pool_ids, pending)
        if n > candidates.size:
            raise BudgetExceededError(f"{n} test items were asked for but only {candidates.size} unlabelled images "
                                      "are free; add images or draw fewer.")
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM, 3, self.test_ids.size])
        chosen = np.sort(rng.choice(candidates, size=int(n), replace=False))
        self.train_ids = np.setdiff1d(self.train_ids, chosen, assume_unique=True)
        test_ids = np.concatenate([self.test_ids, chosen])
        test_labels = np.concatenate([self.test_labels, np.full(chosen.size, UNLABELLED, np.int64)])
        order = np.argsort(test_ids, kind="stable")
        self.test_ids, self.test_labels = test_ids[order], test_labels[order]
        self._event("draw-test", round_index, chosen, None, annotator)
        return chosen

    def label_test(self, ids: np.ndarray, labels: np.ndarray, round_index: int, *,
                   annotator: str | None = None) -> None:
        """Record a person's ``labels`` for test ``ids`` (a later label for an item replaces the earlier one,
        which the history keeps)."""
        ids, labels = _ids_and_labels(ids, labels)
        positions = self._test_positions(ids)
        if (labels == UNLABELLED).any():
            raise ConfigError(f"id {int(ids[labels == UNLABELLED][0])} was given no label.")
        previous = self.test_labels[positions].tolist()
        self.test_labels = self.test_labels.copy()
        self.test_labels[positions] = labels
        self._event("teach-test", round_index, ids, labels, annotator, previous=previous)

    def unlabel_test(self, ids: np.ndarray, round_index: int, *, annotator: str | None = None) -> None:
        """Take back a person's labels of test ``ids``; the items stay in the test set."""
        ids = _unique_ids(ids)
        positions = self._test_positions(ids)
        previous = self.test_labels[positions].tolist()
        self.test_labels = self.test_labels.copy()
        self.test_labels[positions] = UNLABELLED
        self._event("remove-test", round_index, ids, None, annotator, previous=previous)

    def _test_positions(self, ids: np.ndarray) -> np.ndarray:
        if self.test_labels is None:
            raise ConfigError("this run's test labels come from its dataset and cannot be changed.")
        where = {int(item): position for position, item in enumerate(self.test_ids.tolist())}
        missing = [int(item) for item in ids if int(item) not in where]
        if missing:
            raise ConfigError(f"id {missing[0]} is not in the test set.")
        return np.array([where[int(item)] for item in ids], dtype=np.int64)

    def _labelled_positions(self, ids: np.ndarray, what: str) -> np.ndarray:
        where = {int(item): position for position, item in enumerate(self.labelled_ids.tolist())}
        missing = [int(item) for item in ids if int(item) not in where]
        if missing:
            raise ConfigError(f"id {missing[0]} has no label in this run, so it cannot be {what}.")
        return np.array([where[int(item)] for item in ids], dtype=np.int64)

    def _settle_pending(self, ids: np.ndarray) -> None:
        """Drop ``ids`` from the pending selection (and the selection once nothing is left of it)."""
        if not self.pending:
            return
        settled = set(ids.tolist())
        keep = [index for index, item in enumerate(self.pending["ids"]) if item not in settled]
        if len(keep) == len(self.pending["ids"]):
            return
        for key in PENDING_PER_ITEM:
            if key in self.pending:
                self.pending[key] = [self.pending[key][index] for index in keep]
        if not self.pending["ids"]:
            self.pending = None

    def _event(self, op: str, round_index: int, ids: np.ndarray, labels: np.ndarray | None, annotator: str | None,
               **extra: object) -> None:
        self.events.append({"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "op": op,
                            "round": int(round_index), "ids": ids.tolist(),
                            "labels": None if labels is None else labels.tolist(), "annotator": annotator, **extra})

    def acquire_initial_ids(self, n: int, labels: np.ndarray | None = None, *, balanced: bool = False) -> np.ndarray:
        """The ``n`` seeded-random pool ids that form round 0's training set (label them with :meth:`add`).

        With the dataset's ``labels``, only pool items that already have a label are drawn, so a partly
        labelled dataset can start; the unlabelled ones wait for a person. ``balanced`` (which needs
        ``labels``) draws ``n // C`` items from each of the C classes present in the pool and the remaining
        ``n % C`` from as many classes chosen at random, the usual start in the literature (Gal et al. 2017
        start from 2 labels per class).
        """
        pool = self.pool_ids
        if labels is not None:
            pool = pool[np.asarray(labels)[pool] != UNLABELLED]
        if n > pool.size:
            raise BudgetExceededError(f"`n_train_images`={n} must be <= the {pool.size} labelled items in the pool "
                                      "(with no labels yet, start with --n-train-images 0 and a random first batch).")
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM, 1])
        if not balanced:
            return np.sort(rng.choice(pool, size=n, replace=False))
        if labels is None:
            raise ConfigError("a class-balanced initial set needs the dataset's labels.")
        pool_labels = np.asarray(labels)[pool]
        classes = np.unique(pool_labels)
        quota = np.full(classes.size, n // classes.size)
        quota[rng.choice(classes.size, size=n % classes.size, replace=False)] += 1
        short = [int(c) for c, q in zip(classes, quota) if (pool_labels == c).sum() < q]
        if short:
            raise BudgetExceededError(f"a class-balanced initial set of {n} needs more pool items of class {short[0]} "
                                      "than there are; lower --n-train-images or use --initial random.")
        chosen = [rng.choice(pool[pool_labels == c], size=q, replace=False) for c, q in zip(classes, quota)]
        return np.sort(np.concatenate(chosen))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-ready dict of everything in the ledger."""
        return {
            "dataset_fingerprint": self.dataset_fingerprint, "seed": self.seed,
            "train_ids": self.train_ids.tolist(), "val_ids": self.val_ids.tolist(),
            "test_ids": self.test_ids.tolist(), "holdout_ids": self.holdout_ids.tolist(),
            "labelled_ids": self.labelled_ids.tolist(), "labelled_labels": self.labelled_labels.tolist(),
            "labelled_rounds": self.labelled_rounds.tolist(), "skipped_ids": self.skipped_ids.tolist(),
            "skipped_rounds": self.skipped_rounds.tolist(), "rounds": [record.to_dict() for record in self.rounds],
            "pending": self.pending, "events": self.events,
            **({} if self.n_items is None else {"n_items": self.n_items}),
            **({} if self.test_labels is None else {"test_labels": self.test_labels.tolist()}),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> "LabelState":
        """Rebuild a ledger from :meth:`to_dict` output."""
        arrays = {key: np.asarray(payload[key], dtype=np.int64) for key in
                  ("train_ids", "val_ids", "test_ids", "holdout_ids", "labelled_ids", "labelled_labels",
                   "labelled_rounds", "skipped_ids", "skipped_rounds")}
        test_labels = payload.get("test_labels")
        n_items = payload.get("n_items")
        return cls(payload["dataset_fingerprint"], int(payload["seed"]), pending=payload["pending"],
                   rounds=[RoundRecord.from_dict(record) for record in payload["rounds"]],
                   events=list(payload["events"]), n_items=None if n_items is None else int(n_items),
                   test_labels=None if test_labels is None else np.asarray(test_labels, dtype=np.int64), **arrays)

    def save(self, path: Path) -> None:
        """Write the ledger atomically with its format, version and checksum."""
        body = self.to_dict()
        atomic_write_json(path, {"format": FORMAT, "version": VERSION, "sha256": _checksum(body), "state": body})

    @classmethod
    def load(cls, path: Path) -> "LabelState":
        """Read a ledger, refusing foreign, newer or corrupted files with a clear StateError."""
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise StateError(f"{path} does not exist.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StateError(f"{path} is not a readable activelab state file ({error}).") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise StateError(f"{path} is not an activelab label-state file.")
        if document.get("version") != VERSION:
            raise StateError(f"{path} has state format version {document.get('version')}, "
                             f"this activelab reads version {VERSION}.")
        body = document.get("state")
        if not isinstance(body, dict) or document.get("sha256") != _checksum(body):
            raise StateError(f"{path} fails its checksum; it was edited or corrupted, so it is left untouched.")
        try:
            return cls.from_dict(body)
        except (KeyError, TypeError, ValueError) as error:
            raise StateError(f"{path} is missing or has a malformed field ({error}).") from None


#: Keys of a pending selection that hold one value per pending item, in the order of ``ids``.
PENDING_PER_ITEM = ("ids", "scores", "guesses", "confidences")


def _unique_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if np.unique(ids).size != ids.size:
        raise ConfigError("the same id appears twice in one batch of labels.")
    return ids


def _ids_and_labels(ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, labels = np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if ids.shape != labels.shape or ids.ndim != 1:
        raise ConfigError(f"got {ids.size} ids but {labels.size} labels.")
    return _unique_ids(ids), labels


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _draw(rng: np.random.Generator, candidates: np.ndarray, n: int | None, what: str) -> np.ndarray:
    if n is None:
        return candidates
    if n < 0:
        raise ConfigError(f"the {what} size must be >= 0, got {n}.")
    if n > candidates.size:
        raise BudgetExceededError(f"the {what} needs {n} items but only {candidates.size} are available.")
    return rng.choice(candidates, size=n, replace=False)
