"""A simulated experiment: the steps of a :class:`~activelab.run.Run` in a loop, with the dataset as oracle.

Round k: train on the labelled ids -> evaluate on the test split -> query a batch -> teach the dataset's
labels for it. The final acquired batch is trained on and evaluated too (``al_iter`` acquisitions give
``al_iter + 1`` trainings). Every step is saved before the next begins, so the same command run again
after a crash continues where it stopped and ends with the same result.

Items the dataset has no label for are a normal state: the loop teaches what the dataset knows and
stops with the rest pending, until a person labels them (``activelab label``) and the loop is run again.
"""

from __future__ import annotations

from typing import Callable, Sequence

from activelab.callbacks import Callback, RoundPrinter
from activelab.config import RunConfig
from activelab.data.base import UNLABELLED
from activelab.data.state import LabelState
from activelab.records import RoundRecord
from activelab.run import Run

#: Who taught the labels a simulated experiment takes from the dataset.
ORACLE = "dataset"


class _OnStart(Callback):
    def __init__(self, on_start: Callable[[], None]):
        self.on_start = on_start

    def on_open(self, run: Run) -> None:
        self.on_start()


def run_experiment(config: RunConfig, *, on_round: Callable[[RoundRecord], None] | None = None,
                   on_start: Callable[[], None] | None = None, callbacks: Sequence[Callback] = ()) -> LabelState:
    """Run (or resume) the experiment ``config`` describes and return its ledger.

    ``on_start`` is called once the inputs are checked and the run is open, before any round is replayed
    or trained (the CLI prints the run's title there). ``on_round`` is called with each round's record as
    soon as it is evaluated; a resumed run first replays the rounds it had already evaluated. The ledger's
    ``pending`` is not None when the run stopped to wait for a person's labels.
    Raises a :class:`~activelab.errors.UserError` for anything the user can fix.
    """
    first = [_OnStart(on_start)] if on_start is not None else []
    printer = [RoundPrinter(on_round)] if on_round is not None else []
    run = Run(config, callbacks=[*first, *printer, *callbacks])
    finished = simulate(run)
    run.close(finished=finished)
    return run.state


def simulate(run: Run) -> bool:
    """Step ``run`` until its last round is evaluated (True) or a selection waits for a person (False)."""
    al_iter, labels = run.config.al_iter, run.dataset.labels
    while True:
        if run.stale and run.state.n_labelled:
            run.fit()
        if run.state.rounds and not run.state.rounds[-1].evaluated:
            run.evaluate()
        if len(run.state.rounds) > al_iter:
            return True
        batch = run.query()
        known = labels[batch.ids] != UNLABELLED
        if known.any():
            run.teach(batch.ids[known], labels[batch.ids[known]], annotator=ORACLE)
        if not known.all():
            return False


def waiting_for_labels(state: LabelState, run_dir) -> str | None:
    """The sentence telling a person how to continue a run that waits for labels, or None."""
    if state.pending is None:
        return None
    count = len(state.pending["ids"])
    return (f"{count} selected item(s) have no label in the dataset and wait for a person: write them with "
            f"`activelab export --pending --run {run_dir.name} --out {run_dir.parent}`, fill in the label column, "
            f"import it with `activelab label {run_dir} --labels FILE.csv` and run the same command again.")


__all__ = ["ORACLE", "run_experiment", "simulate", "waiting_for_labels"]
