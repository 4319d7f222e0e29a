"""What a round of active learning produced, as one typed record.

The ledger (``state.json``) keeps one :class:`RoundRecord` per trained round; the results store and the
command line read the same record, so a field has one name and one meaning everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RoundRecord:
    """Metrics and timings of round ``round``, trained on ``n_labelled`` labels.

    ``val_accuracy`` is the best validation accuracy (early stopping), ``epochs`` and ``steps`` the epochs
    and optimiser steps trained, ``lr`` the learning rate used (chosen per round with ``auto_lr``),
    ``test_accuracy`` and
    ``test_macro_f1`` are measured on the test split (None without one), ``n_test`` items of it (a person's
    test set can grow between rounds, so the same split may hold more labels later). ``labels_digest`` identifies the
    labelled set the model was trained on. ``acquired`` turns True once nothing of the round's selection
    is pending any more; ``selection_ids`` / ``selection_scores`` list the selected items that were
    taught, in teaching order, with the score that selected each (None where a strategy has no score).
    Times are in seconds.
    """

    round: int
    n_labelled: int
    labels_digest: str = ""
    val_accuracy: float | None = None
    epochs: int | None = None
    steps: int | None = None
    lr: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    n_test: int | None = None
    seconds_train: float | None = None
    seconds_evaluate: float | None = None
    seconds_score: float | None = None
    seconds_select: float | None = None
    acquired: bool = False
    selection_ids: list[int] = field(default_factory=list)
    selection_scores: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> "RoundRecord":
        """Rebuild from :meth:`to_dict` (fields missing from older ledgers keep their defaults)."""
        names = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in names})

    @property
    def evaluated(self) -> bool:
        """Whether the round's model was evaluated (with or without a test split)."""
        return self.seconds_evaluate is not None

    @property
    def seconds(self) -> float:
        """Training plus evaluation time of the round."""
        return (self.seconds_train or 0.0) + (self.seconds_evaluate or 0.0)


#: The record's metric and timing columns, in the order the results store and exports use.
METRIC_COLUMNS = ("round", "n_labelled", "test_accuracy", "test_macro_f1", "val_accuracy", "epochs",
                  "seconds_train", "seconds_evaluate", "seconds_score", "seconds_select")
