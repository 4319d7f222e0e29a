"""Named crash points, so tests can kill a real run at an exact step and check that it resumes.

Setting ``ACTIVELAB_KILL_AT=<point>:<k>`` makes the process kill itself with SIGKILL (no clean-up, as a
power cut or the OOM killer would) the k-th time it reaches ``<point>``. Unset, a crash point costs one
dictionary lookup. The points are listed in :data:`POINTS`.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENVIRONMENT_VARIABLE = "ACTIVELAB_KILL_AT"

POINTS = {
    "state-created": "the ledger of a new run was saved, nothing trained yet",
    "train-epoch": "an epoch of training ended",
    "weights-saved": "a round's trained weights were saved, not yet evaluated",
    "round-evaluated": "a round's metrics are in the ledger, not yet in the store",
    "score-batch": "a batch of the pool was scored",
    "selection-saved": "a selection was saved as pending, not yet labelled",
    "labels-saved": "the new labels are in the ledger, not yet in the store",
    "round-recorded": "a round's selection is in the store",
}

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Kill this process if ``ACTIVELAB_KILL_AT`` names this point and this visit."""
    target = os.environ.get(ENVIRONMENT_VARIABLE)
    if not target:
        return
    _reached[name] += 1
    point, _, visit = target.partition(":")
    if point == name and _reached[name] == int(visit or 1):
        os.kill(os.getpid(), signal.SIGKILL)
