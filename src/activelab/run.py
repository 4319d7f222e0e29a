"""A run of active learning as public steps: fit, evaluate, query, teach, skip, relabel, remove.

A :class:`Run` is the run a run directory holds (``config.json``, ``environment.json``, ``state.json``,
``models/round_KKK.pt``). Each step takes the run's lock, re-reads the ledger (another process may have
labelled items in between), does its work, saves atomically and then tells the callbacks; so a person can
label while the run is open elsewhere, two writers at once are refused, and a process killed during any
step leaves a run that the next step continues.

Rounds: round ``k`` is the ``k``-th model, trained on the labels present when it was fitted. A model is
*stale* once the labels changed (taught, corrected or removed); :meth:`Run.query` then trains and
evaluates a new round before selecting. Items taught from round ``k``'s selection are recorded as
acquired in round ``k + 1``, the round whose model first trains on them.

Every random choice of round ``k`` is seeded from ``(seed, k, purpose)`` alone, never from what ran
before in the process, so a step repeated after a crash draws the same numbers: a resumed run ends with
the same labels, selections and metrics as one that was never interrupted.

Training does not hold the lock: :meth:`Run.fit` reads the labels under the lock, trains without it (a
person keeps labelling meanwhile, possibly from another process) and records the round under the lock
again. The round keeps the digest of the labels it was trained on, so a model whose labels changed while
it trained is recorded as it is, and is stale. Within one process, threads sharing a run directory (the
labelling app's requests and its training thread) wait for each other's steps instead of being refused:
a per-directory lock serialises them before the OS-level lock is taken.

A dataset may grow after the run exists (the labelling app's project): such a dataset says
``appendable = True`` and gives ``fingerprint(n_items)``, the digest of its first ``n_items`` items. The
run keeps an appendable ledger (:meth:`LabelState.create_appendable
<activelab.data.state.LabelState.create_appendable>`): new items get the next ids and go to the pool
(:meth:`Run.refresh`, and on opening); the test set is drawn at random from the unlabelled items
(:meth:`Run.draw_test`) and labelled by a person (:meth:`Run.label`), and the model is evaluated on the
test items a person has labelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from activelab import environment
from activelab.auxiliary import discriminator_unlabelled, transfer_wrongness
from activelab.callbacks import Callback, LabelEvent, StoreCallback, TrackerCallback
from activelab.config import CONFIG_FILE, PYTHON_MODEL_PREFIX, RunConfig
from activelab.data.base import Dataset
from activelab.data.sources import get_source
from activelab.data.state import LabelState
from activelab.data.transforms import augment_batch
from activelab.errors import BudgetExceededError, ConfigError, StateError
from activelab.faults import crash_point
from activelab.inference import POOL_OUTPUTS, embed, pool_outputs, predict_probs
from activelab.pool_scoring import ModelRecipe, discard_cache, score_pool
from activelab.io import atomic_write_bytes, atomic_write_json
from activelab.models import build_model, check_model
from activelab.models.heads import ActiveModel
from activelab.models.modes import set_train_mode
from activelab.records import RoundRecord
from activelab.runlock import RunLock
from activelab.store import STORE_NAME
from activelab.strategies import get_strategy
from activelab.threads import cap_torch_threads
from activelab.training import TrainSettings, evaluate, fit

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
_TRAIN, _SELECT, _MC, _FIRST, _SUBSET = 1, 2, 3, 4, 5
#: The ``round`` of a selection made before any model exists (a first batch drawn at random).
NO_MODEL = -1
#: Scoring batch size of the pool pass.
SCORE_BATCH = 256
#: Pools larger than this are scored into memory-mapped files under ``scores/round_KKK/`` in the run
#: directory: bounded memory, and a crash while scoring resumes from the last finished chunk. The files go
#: once the round's selection is saved.
SCORES_ON_DISK_ABOVE = 100_000
SCORES_DIR = "scores"


_DIRECTORY_LOCKS: dict[Path, threading.RLock] = {}
_DIRECTORY_LOCKS_GUARD = threading.Lock()


def _in_process_lock(run_dir: Path) -> threading.RLock:
    """The lock that makes the threads of this process take turns on ``run_dir`` (one per directory)."""
    key = Path(run_dir).resolve()
    with _DIRECTORY_LOCKS_GUARD:
        return _DIRECTORY_LOCKS.setdefault(key, threading.RLock())


def stream_seed(seed: int, round_index: int, purpose: int) -> int:
    """A 32-bit seed for one purpose in one round, independent of everything else the process did."""
    return int(np.random.SeedSequence([seed, round_index, purpose]).generate_state(1)[0])


@dataclass(frozen=True)
class Batch:
    """A selection waiting for labels, in priority order.

    ``keys`` name the items in the dataset (file paths for image folders); ``guesses`` and ``confidences``
    are the current model's predicted class and its probability (None for a first random batch, made
    before any model exists).
    """

    round: int
    strategy: str
    ids: np.ndarray
    scores: np.ndarray
    keys: list[str]
    guesses: list[str] | None
    confidences: np.ndarray | None

    @classmethod
    def from_pending(cls, pending: dict, dataset: Dataset) -> "Batch":
        ids = np.asarray(pending["ids"], dtype=np.int64)
        scores = np.array([np.nan if score is None else score for score in pending["scores"]], dtype=np.float64)
        guesses = pending.get("guesses")
        confidences = pending.get("confidences")
        return cls(pending["round"], pending["strategy"], ids, scores, [dataset.key(int(item)) for item in ids],
                   None if guesses is None else [dataset.class_names[index] for index in guesses],
                   None if confidences is None else np.asarray(confidences, dtype=np.float64))

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_rows(self) -> list[dict]:
        """One dict per item: rank, id, key, score, guess, confidence."""
        return [{"rank": rank, "id": int(item), "key": key, "score": None if np.isnan(score) else float(score),
                 "guess": None if self.guesses is None else self.guesses[rank],
                 "confidence": None if self.confidences is None else float(self.confidences[rank])}
                for rank, (item, key, score) in enumerate(zip(self.ids, self.keys, self.scores))]

    def to_frame(self):
        """The batch as a pandas DataFrame (pandas must be installed)."""
        try:
            import pandas
        except ImportError:
            raise ConfigError("Batch.to_frame needs pandas; install it or use Batch.to_rows().") from None
        return pandas.DataFrame(self.to_rows(), columns=["rank", "id", "key", "score", "guess", "confidence"])


class Run:
    """An active-learning run in a run directory, driven step by step.

    Build one with :meth:`create` or :meth:`open` (or from a :class:`~activelab.config.RunConfig`).
    ``callbacks`` are told about every step after the results store (always on) has been.
    """

    def __init__(self, config: RunConfig, *, callbacks: Sequence[Callback] = (),
                 model: Callable[[], nn.Module] | None = None):
        config = config.validated()
        cap_torch_threads()
        self.config = config
        self.strategy = get_strategy(config.sampling_method)
        self.dataset = self._load_dataset()
        self.model_factory = model
        if config.model_class.startswith(PYTHON_MODEL_PREFIX):
            if model is None:
                raise ConfigError(f"this run trains the Python model {config.model_class[len(PYTHON_MODEL_PREFIX):]}; "
                                  "open it from Python with Run.open(run_dir, model=...) and the same model.")
        else:
            check_model(config.model_class, self.dataset.input_shape, pretrained=config.pretrained,
                        weights=Path(config.weights) if config.weights else None)
        self.run_dir = _prepare_run_dir(config)
        self.settings = TrainSettings(
            max_epochs=config.max_epochs, lr=config.lr, batch_size=config.batch_size, patience=config.patience,
            gpus=config.gpus, num_workers=config.num_workers, progress=config.progress,
            augment=augment_batch if config.augment else None, min_steps=config.min_steps, monitor=config.monitor,
            auto_lr=config.auto_lr)
        self.callbacks: list[Callback] = [StoreCallback(Path(config.out) / STORE_NAME),
                                          TrackerCallback(config.trackers), *callbacks]
        with _in_process_lock(self.run_dir), RunLock(self.run_dir):
            self.state = self._load_or_create_state()
        self._emit("on_open")

    @classmethod
    def create(cls, run_dir: str | Path, *, data: str, data_dir: str | Path | None = None,
               model: str | Callable[[], nn.Module] = "cnn", strategy: str = "margin", seed: int = 0,
               callbacks: Sequence[Callback] = (), **options) -> "Run":
        """Create the run in ``run_dir`` (or open it, when it holds a run with the same settings).

        ``model`` is a model name (``cnn``, ``resnet18``, ``torchvision:NAME``, ``timm:NAME``) or a callable
        that builds your own network: an :class:`~activelab.models.ActiveModel` (for example
        ``ActiveModel.from_classifier(net, embedding_layer="avgpool", input_shape=...)``), or any
        ``nn.Module`` mapping images to features, which gets activelab's dropout head. It is called once per
        round after seeding torch, and must be passed again to :meth:`open`. ``options`` are any other
        :class:`~activelab.config.RunConfig` fields, e.g. ``n_train_images=0`` to start without labels.
        """
        run_dir = Path(run_dir)
        factory = None if isinstance(model, str) else model
        if factory is not None:
            model = PYTHON_MODEL_PREFIX + getattr(factory, "__qualname__", type(factory).__name__)
        config = RunConfig(data_class=data, data_dir=None if data_dir is None else str(data_dir), model_class=model,
                           sampling_method=strategy, seed=seed, out=str(run_dir.parent), run_name=run_dir.name,
                           **options)
        return cls(config, callbacks=callbacks, model=factory)

    @classmethod
    def open(cls, run_dir: str | Path, *, callbacks: Sequence[Callback] = (),
             model: Callable[[], nn.Module] | None = None, **changes) -> "Run":
        """Open the run in ``run_dir`` with its saved settings (``changes`` may set those that do not change
        results: ``num_workers``, ``progress``, ``al_iter``, ``trackers``); ``model`` as for :meth:`create`."""
        config = RunConfig.load_saved(Path(run_dir))
        return cls(dataclasses.replace(config, **changes), callbacks=callbacks, model=model)

    # ------------------------------------------------------------------ what the run holds
    @property
    def rounds(self) -> list[RoundRecord]:
        """One record per trained model, oldest first."""
        return list(self.state.rounds)

    @property
    def labelled(self) -> dict[int, str]:
        """Every labelled item: id -> class name."""
        names = self.dataset.class_names
        return {int(item): names[label] for item, label in zip(self.state.labelled_ids, self.state.labelled_labels)}

    @property
    def pending(self) -> Batch | None:
        """The selection waiting for labels, or None."""
        return None if self.state.pending is None else Batch.from_pending(self.state.pending, self.dataset)

    @property
    def history(self) -> list[dict]:
        """Every change to the labels: time, op (teach, skip, relabel, remove), round, ids, labels, annotator."""
        return list(self.state.events)

    @property
    def stale(self) -> bool:
        """Whether the labels changed since the latest model was trained (or no model exists yet)."""
        return not self.state.rounds or self.state.rounds[-1].labels_digest != self.state.labels_digest()

    # ------------------------------------------------------------------ steps
    def fit(self) -> RoundRecord:
        """Train a new round's model on the current labels (or finish the one a crash interrupted).

        The labels are read under the run's lock, the model trains without it, and the round is recorded
        under the lock again (see the module's description).
        """
        with self._step():
            plan = self._fit_plan()
        if isinstance(plan, RoundRecord):
            return plan
        if plan.fit_record is None:
            plan = self._train(plan)
        with self._step():
            record, recorded = self._record_fit(plan)
        if recorded:
            self._emit("on_fit_end", record)
        return record

    def evaluate(self) -> RoundRecord:
        """Evaluate the latest model on the test split and record the metrics in its round."""
        with self._step():
            return self._evaluate()

    def query(self, n: int | None = None) -> Batch:
        """The next ``n`` items to label (default ``al_samples_per_iter``), saved as pending.

        Trains and evaluates a new model first when the labels changed. A pending selection made by the
        current model is returned as it is, so a repeated or resumed call selects nothing new; with no
        labels at all the batch is drawn at random (there is no model to ask yet).
        """
        n = self.config.al_samples_per_iter if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"`n`={n!r} must be a whole number >= 1.")
        with self._step():
            must_fit = bool(self.state.n_labelled) and self.stale
        if must_fit:
            self.fit()
        with self._step():
            state = self.state
            if state.rounds and not state.rounds[-1].evaluated:
                self._evaluate()
            round_index = len(state.rounds) - 1
            if state.pending is None or state.pending["round"] != round_index:
                state.pending = self._select(int(n), round_index)
                self._save()
                crash_point("selection-saved")
                self._discard_scores()
            batch = Batch.from_pending(state.pending, self.dataset)
        self._emit("on_query_end", batch)
        return batch

    def teach(self, ids: Sequence[int], labels: Sequence[int | str], *, annotator: str | None = None) -> None:
        """Record ``labels`` (class names or indices) for pool items ``ids``; other pending items stay pending."""
        with self._step():
            ids, labels = np.asarray(ids, dtype=np.int64).reshape(-1), self._class_indices(labels)
            round_index = self._teach(ids, labels, annotator)
            self._save()
            crash_point("labels-saved")
        self._emit("on_teach_end", LabelEvent("teach", round_index, ids, labels, annotator))
        crash_point("round-recorded")

    def label(self, ids: Sequence[int], labels: Sequence[int | str], *, annotator: str | None = None) -> None:
        """A person's labels for any of their items, in one step: pool items are taught, labelled items
        relabelled (the last label wins; the history keeps every one) and test items take the label as
        their test truth. The call a labelling interface makes, where two people may label one item."""
        with self._step():
            state = self.state
            ids, labels = np.asarray(ids, dtype=np.int64).reshape(-1), self._class_indices(labels)
            if ids.size != labels.size:
                raise ConfigError(f"got {ids.size} ids but {labels.size} labels.")
            test = np.isin(ids, state.test_ids) & (state.test_labels is not None)
            relabel = np.isin(ids, state.labelled_ids)
            teach = ~test & ~relabel
            round_index = self._selection_round()
            events = []
            if test.any():
                state.label_test(ids[test], labels[test], round_index, annotator=annotator)
                events.append(LabelEvent("teach-test", round_index, ids[test], labels[test], annotator))
            if relabel.any():
                state.relabel(ids[relabel], labels[relabel], round_index, annotator=annotator)
                events.append(LabelEvent("relabel", round_index, ids[relabel], labels[relabel], annotator))
            if teach.any():
                taught_round = self._teach(ids[teach], labels[teach], annotator)
                events.append(LabelEvent("teach", taught_round, ids[teach], labels[teach], annotator))
            self._save()
        for event in events:
            self._emit("on_teach_end", event)

    def unlabel(self, ids: Sequence[int], *, annotator: str | None = None) -> None:
        """Take back a person's labels of any of their items: training items return to the pool, test
        items stay in the test set without a label (how a labelling interface undoes a first label)."""
        with self._step():
            state = self.state
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            test = np.isin(ids, state.test_ids) & (state.test_labels is not None)
            round_index = self._selection_round()
            if test.any():
                state.unlabel_test(ids[test], round_index, annotator=annotator)
            if (~test).any():
                state.remove(ids[~test], round_index, annotator=annotator)
            self._save()
        if (~test).any():
            self._emit("on_teach_end", LabelEvent("remove", round_index, ids[~test], None, annotator))

    def draw_test(self, n: int, *, annotator: str | None = None) -> np.ndarray:
        """Draw ``n`` random unlabelled items (none pending) into the test set of a run on a growing
        dataset, for a person to label; the strategy never sees them. Returns their ids."""
        with self._step():
            chosen = self.state.draw_test(n, self._selection_round(), annotator=annotator)
            self._save()
        return chosen

    def refresh(self) -> np.ndarray:
        """Reload a growing dataset and put the items added since the ledger last saw it into the pool;
        returns their ids (none for a dataset of fixed size)."""
        with self._step():
            self.dataset = self._load_dataset()
            new = self._append_new_items(self.state)
            if new.size:
                self._save()
        return new

    def skip(self, ids: Sequence[int], *, annotator: str | None = None) -> None:
        """Return pending ``ids`` to the pool; the current model does not offer them again."""
        with self._step():
            state = self.state
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            round_index = self._selection_round()
            state.skip(ids, round_index, annotator=annotator)
            if round_index != NO_MODEL:
                state.rounds[round_index].acquired = state.pending is None
            self._save()
        self._emit("on_teach_end", LabelEvent("skip", round_index, ids, None, annotator))

    def relabel(self, ids: Sequence[int], labels: Sequence[int | str], *, annotator: str | None = None) -> None:
        """Correct the labels of labelled ``ids``; the old labels stay in the history."""
        with self._step():
            ids, labels = np.asarray(ids, dtype=np.int64).reshape(-1), self._class_indices(labels)
            round_index = self._selection_round()
            self.state.relabel(ids, labels, round_index, annotator=annotator)
            self._save()
        self._emit("on_teach_end", LabelEvent("relabel", round_index, ids, labels, annotator))

    def remove(self, ids: Sequence[int], *, annotator: str | None = None) -> None:
        """Take back the labels of labelled ``ids``: they return to the unlabelled pool."""
        with self._step():
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            round_index = self._selection_round()
            self.state.remove(ids, round_index, annotator=annotator)
            self._save()
        self._emit("on_teach_end", LabelEvent("remove", round_index, ids, None, annotator))

    def close(self, *, finished: bool) -> None:
        """Tell the callbacks the caller is done with the run (``finished``: it ran all its rounds)."""
        self._emit("on_close", finished)

    # ------------------------------------------------------------------ machinery
    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        """Hold the locks for one step and work on the ledger as it is on disk now."""
        with _in_process_lock(self.run_dir), RunLock(self.run_dir):
            self.state = LabelState.load(self.run_dir / STATE_FILE)
            if self.state.n_items is not None and self.state.n_items > len(self.dataset):
                self.dataset = self._load_dataset()  # another process added items
            yield

    def _save(self) -> None:
        self.state.save(self.run_dir / STATE_FILE)

    def _emit(self, hook: str, *arguments: object) -> None:
        with _in_process_lock(self.run_dir):  # callbacks read the ledger another thread's step may change
            for callback in self.callbacks:
                getattr(callback, hook)(self, *arguments)

    def _load_dataset(self) -> Dataset:
        config = self.config
        data_dir = Path(config.data_dir) if config.data_dir else None
        return get_source(config.data_class).load(data_dir, **config.source_options())

    def _append_new_items(self, state: LabelState) -> np.ndarray:
        """Put the items an appendable dataset gained into the ledger's pool (nothing for other datasets)."""
        dataset = self.dataset
        if state.n_items is None or len(dataset) == state.n_items:
            return np.empty(0, np.int64)
        return state.append_items(len(dataset), dataset.fingerprint(len(dataset)))

    def _teach(self, ids: np.ndarray, labels: np.ndarray, annotator: str | None) -> int:
        """Teach pool ``ids`` their ``labels`` in the current step; returns the selection's round."""
        state = self.state
        round_index = self._selection_round()
        scores = self._pending_scores()
        state.add(ids, labels, round_index + 1, annotator=annotator)
        if round_index != NO_MODEL:
            record = state.rounds[round_index]
            record.selection_ids.extend(ids.tolist())
            record.selection_scores.extend(scores.get(int(item)) for item in ids)
            record.acquired = state.pending is None
        return round_index

    def _selection_round(self) -> int:
        """The round whose model made the pending selection (the latest round when nothing is pending)."""
        if self.state.pending is not None:
            return int(self.state.pending["round"])
        return len(self.state.rounds) - 1

    def _pending_scores(self) -> dict[int, float | None]:
        pending = self.state.pending or {"ids": [], "scores": []}
        return dict(zip(pending["ids"], pending["scores"]))

    def _class_indices(self, labels: Sequence[int | str]) -> np.ndarray:
        """Class indices of ``labels`` given as class names, indices or index strings."""
        names, index_of = self.dataset.class_names, self.dataset.class_index()
        indices = []
        for label in np.asarray(labels, dtype=object).reshape(-1):
            key = str(int(label)) if isinstance(label, (int, np.integer)) and not isinstance(label, bool) else str(label)
            if key not in index_of:
                raise ConfigError(f"label {label!r} is not one of the classes {', '.join(names)}.")
            indices.append(index_of[key])
        return np.array(indices, dtype=np.int64)

    def _load_or_create_state(self) -> LabelState:
        config, dataset, path = self.config, self.dataset, self.run_dir / STATE_FILE
        appendable = getattr(dataset, "appendable", False)
        if path.exists():
            state = LabelState.load(path)
            known = state.n_items if appendable and state.n_items is not None and state.n_items <= len(dataset) else None
            if state.dataset_fingerprint != (dataset.fingerprint() if known is None else dataset.fingerprint(known)):
                raise StateError(f"{path} was made from different data than {dataset.name} has now; "
                                 "it is left untouched.")
            if self._append_new_items(state).size:
                state.save(path)
            return state
        if appendable:
            if "p_wrong_N" in self.strategy.needs:
                raise ConfigError(f"strategy '{self.strategy.name}' needs a holdout split, which a growing dataset "
                                  "does not have; choose another strategy.")
            state = LabelState.create_appendable(len(dataset), seed=config.seed,
                                                 dataset_fingerprint=dataset.fingerprint(len(dataset)))
            state.save(path)
            return state
        state = LabelState.create(dataset.labels, seed=config.seed, dataset_fingerprint=dataset.fingerprint(),
                                  predefined_test=dataset.predefined_test, n_val=config.n_val, n_test=config.n_test,
                                  n_holdout=config.n_holdout, pool_size=config.pool_size)
        if "p_wrong_N" in self.strategy.needs and state.holdout_ids.size < 2:
            raise ConfigError(f"strategy '{self.strategy.name}' needs a holdout split of at least 2 items, got "
                              f"{state.holdout_ids.size}; set --n-holdout.")
        budget = labelling_budget(config)
        if budget > state.train_ids.size:
            raise BudgetExceededError(
                f"the labelling budget of {budget} labels (initial labels, or a first random batch, plus al_iter "
                f"batches of al_samples_per_iter) must be <= the pool size {state.train_ids.size}.")
        if config.n_train_images:
            initial = state.acquire_initial_ids(config.n_train_images, dataset.labels,
                                                balanced=config.initial == "balanced")
            state.add(initial, dataset.labels[initial], 0, annotator="dataset")
        state.save(path)
        crash_point("state-created")
        return state

    def _weights_path(self, round_index: int) -> Path:
        return self.run_dir / "models" / f"round_{round_index:03d}.pt"

    def _new_model(self, round_index: int) -> ActiveModel:
        config, dataset = self.config, self.dataset
        torch.manual_seed(stream_seed(config.seed, round_index, _TRAIN))
        if self.model_factory is None:
            model = build_model(config.model_class, dataset.input_shape, dataset.num_classes,
                                pretrained=config.pretrained, weights=Path(config.weights) if config.weights else None)
        else:
            model = self.model_factory()
            if not isinstance(model, ActiveModel):
                model = ActiveModel.from_backbone(model, dataset.num_classes, dataset.input_shape)
        return set_train_mode(model, config.train_mode)

    def _fit_plan(self) -> "RoundRecord | _FitPlan":
        """Under the lock: the latest round when it was trained on the current labels, else what to train
        (with the fit record already filled in when a crash left the weights saved but the round unrecorded)."""
        state = self.state
        if not state.n_labelled:
            raise ConfigError("there are no labels to train on yet; query a first batch and teach its labels.")
        round_index, digest = len(state.rounds), state.labels_digest()
        if state.rounds and state.rounds[-1].labels_digest == digest:
            return state.rounds[-1]
        path = self._weights_path(round_index)
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        fit_record = saved["fit"] if saved is not None and saved.get("labels_digest") == digest else None
        return _FitPlan(round_index, digest, state.labelled_ids.copy(), state.labelled_labels.copy(),
                        state.val_ids.copy(), fit_record)

    def _train(self, plan: "_FitPlan") -> "_FitPlan":
        """Without the lock: train ``plan``'s model; returns the plan with its fit record and weights."""
        round_index = plan.round_index
        model = self._new_model(round_index)
        if self.config.warm_start and round_index > 0:
            model.load_state_dict(load_weights(self._weights_path(round_index - 1)))
        _progress(self, round_index, f"train on {plan.ids.size} labels")
        loggers = [logger for callback in self.callbacks for logger in callback.training_loggers(self, round_index)]
        result = fit(model, self.dataset, plan.ids, plan.labels, plan.val_ids, self.settings,
                     seed=stream_seed(self.config.seed, round_index, _TRAIN), loggers=loggers)
        fit_record = {"val_accuracy": result.best_val_accuracy, "epochs": result.epochs, "steps": result.steps,
                      "lr": result.lr, "seconds_train": result.seconds}
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "fit": fit_record, "labels_digest": plan.digest}, buffer)
        return dataclasses.replace(plan, fit_record=fit_record, weights=buffer.getvalue())

    def _record_fit(self, plan: "_FitPlan") -> tuple[RoundRecord, bool]:
        """Under the lock: save the weights and append the round; returns it and whether it is new."""
        state = self.state
        if len(state.rounds) != plan.round_index:
            latest = state.rounds[-1] if state.rounds else None
            if latest is not None and latest.round == plan.round_index and latest.labels_digest == plan.digest:
                return latest, False
            raise StateError(f"round {plan.round_index} was recorded by another process while this one trained; "
                             "its model is kept and this one is dropped.")
        if plan.weights is not None:
            atomic_write_bytes(self._weights_path(plan.round_index), plan.weights)
            crash_point("weights-saved")
        record = RoundRecord(plan.round_index, int(plan.ids.size), labels_digest=plan.digest, **plan.fit_record)
        state.rounds.append(record)
        self._save()
        return record, True

    def _trained_model(self, round_index: int) -> ActiveModel:
        model = self._new_model(round_index)
        model.load_state_dict(load_weights(self._weights_path(round_index)))
        return model.eval()

    def _evaluate(self) -> RoundRecord:
        state = self.state
        if not state.rounds:
            raise ConfigError("there is no model to evaluate yet; fit one first.")
        record = state.rounds[-1]
        model = self._trained_model(record.round)
        start = time.perf_counter()
        _progress(self, record.round, "evaluate")
        if state.test_labels is None:
            test_ids, test_labels = state.test_ids, None
        else:  # a person's test labels
            test_ids, test_labels = state.labelled_test
        if test_ids.size:
            metrics = evaluate(model, self.dataset, test_ids, self.settings, labels=test_labels)
            record.test_accuracy, record.test_macro_f1 = metrics["test_accuracy"], metrics["test_macro_f1"]
        record.n_test = int(test_ids.size)
        record.seconds_evaluate = time.perf_counter() - start
        self._save()
        crash_point("round-evaluated")
        self._emit("on_evaluate_end", record)
        return record

    def _select(self, n: int, round_index: int) -> dict:
        """Score the pool with round ``round_index``'s model and choose ``n`` items (at random with no model).

        With ``pool_subset``, only a seeded random subset of that many pool items (at least ``n``), drawn
        afresh each round, is scored and chosen from.
        """
        config, state = self.config, self.state
        pool = np.setdiff1d(state.pool_ids, state.skipped_in(round_index), assume_unique=True)
        if n > pool.size:
            raise BudgetExceededError(f"`n`={n} must be <= the remaining pool size {pool.size}.")
        if round_index == NO_MODEL:
            positions = np.random.default_rng([config.seed, 0, _FIRST]).choice(pool.size, size=n, replace=False)
            return {"round": NO_MODEL, "strategy": "random (no model yet)", "ids": pool[positions].tolist(),
                    "scores": [None] * n, "seconds_score": 0.0, "seconds_select": 0.0}
        rng = np.random.default_rng([config.seed, round_index, _SELECT])
        if config.pool_subset is not None and pool.size > max(config.pool_subset, n):
            subset = np.random.default_rng([config.seed, round_index, _SUBSET])
            pool = np.sort(subset.choice(pool, size=max(config.pool_subset, n), replace=False))
        model = self._trained_model(round_index)
        start = time.perf_counter()
        _progress(self, round_index, f"score {pool.size} pool items")
        inputs = self._strategy_inputs(model, round_index, pool)
        scored = time.perf_counter()
        _progress(self, round_index, f"select {n} with {self.strategy.name}")
        selection = self.strategy.on_computed_inputs(n, rng=rng, n_pool=pool.size, **inputs,
                                                     **config.strategy_options())
        done = time.perf_counter()
        ids = pool[selection.positions]
        if "probs_N_C" in inputs:  # the strategy's pass already has the model's guesses
            probs = inputs["probs_N_C"][selection.positions]
        else:
            probs = predict_probs(model, self.dataset, ids, batch_size=SCORE_BATCH, device=self.settings.device)
        record = state.rounds[round_index]
        record.seconds_score, record.seconds_select = scored - start, done - scored
        return {"round": round_index, "strategy": self.strategy.name, "ids": ids.tolist(),
                "scores": [float(score) if np.isfinite(score) else None for score in selection.scores],
                "guesses": probs.argmax(1).tolist(), "confidences": probs.max(1).tolist(),
                "seconds_score": scored - start, "seconds_select": done - scored}

    def _scores_dir(self, round_index: int) -> Path:
        return self.run_dir / SCORES_DIR / f"round_{round_index:03d}"

    def _discard_scores(self) -> None:
        """Delete the on-disk pool outputs once a selection is saved (every round's, in case of a crash)."""
        folder = self.run_dir / SCORES_DIR
        for round_folder in sorted(folder.glob("round_*")):
            discard_cache(round_folder)

    def _recipe(self) -> ModelRecipe:
        """How a Ray worker rebuilds this run's network before loading the round's weights."""
        shape, classes = self.dataset.input_shape, self.dataset.num_classes
        if self.model_factory is not None:
            return ModelRecipe(shape, classes, factory=self.model_factory)
        return ModelRecipe(shape, classes, name=self.config.model_class)

    def _strategy_inputs(self, model: ActiveModel, round_index: int, pool: np.ndarray) -> dict:
        """Compute the arrays the strategy declared it needs, in one pass over the pool where possible."""
        config, state, dataset, settings = self.config, self.state, self.dataset, self.settings
        needs = set(self.strategy.needs)
        wanted = {need for need in needs if need in POOL_OUTPUTS}
        if needs & {"p_wrong_N", "p_unlabelled_N"}:
            wanted.add("emb_N_D")
        options = dict(batch_size=SCORE_BATCH, device=settings.device, num_workers=settings.num_workers,
                       seed=stream_seed(config.seed, round_index, _MC))
        cache_dir = self._scores_dir(round_index) if pool.size > SCORES_ON_DISK_ABOVE else None
        inputs = dict(score_pool(model, dataset, pool, wanted, mc_samples=config.mc_samples, progress=config.progress,
                                 cache_dir=cache_dir, executor=config.executor, ray_address=config.ray_address,
                                 workers=config.ray_workers, recipe=self._recipe(), **options)) if wanted else {}
        if "labelled_emb_M_D" in needs:
            inputs["labelled_emb_M_D"] = embed(model, dataset, state.labelled_ids, **options)
        helper_seed = stream_seed(config.seed, round_index, _SELECT)
        if "p_wrong_N" in needs:
            holdout = state.holdout_ids
            outputs = pool_outputs(model, dataset, holdout, {"probs_N_C", "emb_N_D"}, **options)
            correct = outputs["probs_N_C"].argmax(1) == dataset.labels[holdout]
            inputs["p_wrong_N"] = transfer_wrongness(outputs["emb_N_D"], correct, inputs["emb_N_D"], helper_seed)
        if "p_unlabelled_N" in needs:
            inputs["p_unlabelled_N"] = discriminator_unlabelled(embed(model, dataset, state.labelled_ids, **options),
                                                                inputs["emb_N_D"], helper_seed)
        return inputs


@dataclass(frozen=True)
class _FitPlan:
    """What one training reads under the lock: the round, the labels' digest, the labelled ids and labels,
    the validation ids; then the fit record and the serialised weights once trained."""

    round_index: int
    digest: str
    ids: np.ndarray
    labels: np.ndarray
    val_ids: np.ndarray
    fit_record: dict | None
    weights: bytes | None = None


def labelling_budget(config: RunConfig) -> int:
    """Labels a simulated run of ``config`` acquires: the initial set (or, with none, a first random batch)
    and ``al_iter`` batches. A run with neither initial labels nor planned rounds is driven by hand, one
    ``query(n)`` at a time, and each query checks its own ``n`` against the pool."""
    if not config.n_train_images and not config.al_iter:
        return 0
    initial = config.n_train_images or config.al_samples_per_iter
    return initial + config.al_iter * config.al_samples_per_iter


def _progress(run: Run, round_index: int, step: str) -> None:
    """Log ``round k/N: step``; rounds past the planned ``al_iter`` (a person's labelling) have no ``/N``."""
    planned = f"/{run.config.al_iter}" if round_index <= run.config.al_iter else ""
    log.info("round %d%s: %s", round_index, planned, step)


def load_weights(path: Path) -> dict:
    """The model weights a round saved at ``path`` (a one-sentence StateError when the file is missing)."""
    if not path.exists():
        raise StateError(f"{path} is missing, so the run cannot continue; the run directory is incomplete.")
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _prepare_run_dir(config: RunConfig) -> Path:
    out, run_dir = Path(config.out), config.run_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output path {out} exists and is not a directory.")
    try:
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory {run_dir} ({error.strerror}).") from None
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        changed = RunConfig.load_saved(run_dir).differences(config)
        if changed:
            raise StateError(f"{run_dir} holds a run with a different configuration ({', '.join(changed)}); "
                             "use another --run-name or --out to start a new run.")
    else:
        probe = run_dir / ".write-test"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"the output directory {run_dir} is not writable ({error.strerror}).") from None
        atomic_write_json(run_dir / "environment.json", environment.describe())
        atomic_write_json(saved, config.to_dict())
    return run_dir


__all__ = ["Batch", "Run", "labelling_budget", "stream_seed"]
