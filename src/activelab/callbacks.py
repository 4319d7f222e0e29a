"""What happens around a run's steps: the results store, the command line's table, trackers.

A :class:`Callback` has one hook per step of a :class:`~activelab.run.Run`, each called after the step's
result is safely in the ledger, with the step's typed record. Hooks do nothing by default, so a callback
implements only those it needs (as Lightning's callbacks do). The results store is the first callback:
always on, and re-synced from the ledger whenever a run is opened, so the store never lags the ledger
after a crash.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from activelab.records import RoundRecord
from activelab.store import Store

if TYPE_CHECKING:
    from activelab.run import Batch, Run


@dataclass(frozen=True)
class LabelEvent:
    """A change to a run's labels: ``op`` is teach, skip, relabel or remove; ``round`` the model's round."""

    op: str
    round: int
    ids: np.ndarray
    labels: np.ndarray | None
    annotator: str | None


class Callback:
    """Hooks around a run's steps; override the ones you need."""

    def on_open(self, run: Run) -> None:
        """The run was created or opened (its ledger is loaded)."""

    def on_fit_end(self, run: Run, record: RoundRecord) -> None:
        """A model was trained on the current labels; ``record`` holds the training metrics."""

    def on_evaluate_end(self, run: Run, record: RoundRecord) -> None:
        """The latest model was evaluated on the test split; ``record`` now holds the test metrics."""

    def on_query_end(self, run: Run, batch: Batch) -> None:
        """A selection was made and saved as pending."""

    def on_teach_end(self, run: Run, event: LabelEvent) -> None:
        """Labels were taught, skipped, corrected or removed."""

    def on_close(self, run: Run, finished: bool) -> None:
        """A simulated experiment stopped; ``finished`` when it ran all its rounds."""

    def training_loggers(self, run: Run, round_index: int) -> list:
        """Lightning loggers that should receive round ``round_index``'s training curves."""
        return []


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StoreCallback(Callback):
    """Keeps the SQLite results store of ``<out>/activelab.sqlite`` in step with the ledger."""

    def __init__(self, path: Path):
        self.store = Store(path)

    def on_open(self, run: Run) -> None:
        config = run.config
        self.store.record_run(config.name, created=_now(), dataset=run.dataset.name, strategy=run.strategy.name,
                              model=config.model_class, seed=config.seed, run_dir=run.run_dir.resolve(),
                              config=config.to_dict(),
                              environment=json.loads((run.run_dir / "environment.json").read_text()))
        for record in run.rounds:  # the store may lag the ledger after a crash
            self._record(run, record.round)

    def on_evaluate_end(self, run: Run, record: RoundRecord) -> None:
        self._record(run, record.round)

    def on_teach_end(self, run: Run, event: LabelEvent) -> None:
        if 0 <= event.round < len(run.rounds):
            self._record(run, event.round)

    def on_close(self, run: Run, finished: bool) -> None:
        if finished:
            self.store.finish_run(run.config.name, _now())

    def _record(self, run: Run, round_index: int) -> None:
        """Write round ``round_index`` of the ledger (metrics and the labels its selection acquired)."""
        state, run_id = run.state, run.config.name
        record = state.rounds[round_index]
        self.store.record_round(run_id, record)
        labels = dict(zip(state.labelled_ids.tolist(), state.labelled_labels.tolist()))
        kept = [(item, score) for item, score in zip(record.selection_ids, record.selection_scores) if item in labels]
        if kept:
            self.store.record_selection(run_id, round_index, [item for item, _ in kept], [score for _, score in kept],
                                        [labels[item] for item, _ in kept])


class RoundPrinter(Callback):
    """Calls ``on_round(record)`` for every evaluated round, replaying those a reopened run had already."""

    def __init__(self, on_round: Callable[[RoundRecord], None]):
        self.on_round = on_round

    def on_open(self, run: Run) -> None:
        for record in run.rounds:
            if record.evaluated:
                self.on_round(record)

    def on_evaluate_end(self, run: Run, record: RoundRecord) -> None:
        self.on_round(record)


class TrackerCallback(Callback):
    """Sends training curves and round metrics to experiment trackers (:mod:`activelab.trackers`).

    The trackers are opened at the first training or evaluation, not when the run is opened, so a step that
    only changes labels (importing a person's labels) starts no tracker run.
    """

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._loggers: list | None = None

    def loggers(self, run: Run) -> list:
        if self._loggers is None:
            from activelab.trackers import make_loggers

            self._loggers = make_loggers(self.names, run.run_dir, run.config.name, run.config.to_dict())
        return self._loggers

    def training_loggers(self, run: Run, round_index: int) -> list:
        from activelab.trackers import round_loggers

        return round_loggers(self.loggers(run), round_index)

    def on_evaluate_end(self, run: Run, record: RoundRecord) -> None:
        from activelab.trackers import count_classes, log_round

        log_round(self.loggers(run), record, count_classes(run.state.labelled_labels, run.dataset.class_names))

    def on_query_end(self, run: Run, batch: Batch) -> None:
        from activelab.trackers import log_round

        if batch.round >= 0:
            log_round(self.loggers(run), run.state.rounds[batch.round], fields=("seconds_score", "seconds_select"))

    def on_close(self, run: Run, finished: bool) -> None:
        if self._loggers is not None:
            from activelab.trackers import finalize

            finalize(self._loggers, "success" if finished else "interrupted")
