"""Kill a real run with SIGKILL at named points in every phase, resume it, and compare with a clean run.

Each kill happens in a subprocess through ``ACTIVELAB_KILL_AT=<point>:<visit>`` (see activelab.faults);
the resumed run must end with exactly the same labelled ids, selections and test metrics as an
uninterrupted run with the same seed (bit-identical on the CPU).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from activelab.data.state import LabelState
from activelab.runlock import RunLock

FLAGS = ["run", "--sampling-method", "entropy", "--pool-size", "600", "--n-test", "300", "--n-val", "100",
         "--n-train-images", "40", "--al-samples-per-iter", "30", "--al-iter", "2", "--max-epochs", "2", "--min-steps", "0",
         "--quiet", "--run-name", "crash"]

# One run killed again and again, each time at the next point: (point, visit within that process).
# Together the kills cover state creation, training, saving weights, evaluation, scoring, selection,
# labelling and recording, in the first and later rounds.
KILL_CHAIN = [("state-created", 1), ("train-epoch", 1), ("weights-saved", 1), ("round-evaluated", 1),
              ("score-batch", 1), ("selection-saved", 1), ("labels-saved", 1), ("train-epoch", 2),
              ("round-evaluated", 1), ("score-batch", 2), ("round-recorded", 1), ("weights-saved", 1)]


def run_cli(out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "ACTIVELAB_KILL_AT"}
    if kill_at:
        environment["ACTIVELAB_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "activelab.cli", *FLAGS, "--out", str(out)], env=environment,
                          capture_output=True, text=True, timeout=600)


def outcome(out: Path) -> dict:
    state = LabelState.load(out / "crash" / "state.json")
    with sqlite3.connect(out / "activelab.sqlite") as connection:
        selections = connection.execute("SELECT round, rank, item_id, score FROM selections ORDER BY round, rank").fetchall()
        rounds = connection.execute("SELECT round, n_labelled, test_accuracy, test_macro_f1 FROM rounds ORDER BY round").fetchall()
    metrics = [(r.round, r.n_labelled, r.test_accuracy, r.test_macro_f1, r.val_accuracy) for r in state.rounds]
    return {"labelled": state.labelled_ids.tolist(), "labels": state.labelled_labels.tolist(), "metrics": metrics,
            "selections": selections, "store_rounds": rounds}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fashion):
    out = tmp_path_factory.mktemp("reference")
    result = run_cli(out)
    assert result.returncode == 0, result.stderr
    return outcome(out)


def test_run_killed_at_every_phase_resumes_to_the_same_result(tmp_path, reference):
    for point, visit in KILL_CHAIN:
        killed = run_cli(tmp_path, f"{point}:{visit}")
        assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {point}:{visit}: {killed.stderr}"
    resumed = run_cli(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(tmp_path) == reference
    with RunLock(tmp_path / "crash"):  # the killed runs' locks died with them and the last one released its own
        pass
