"""The results store: one SQLite file per results folder, holding runs, rounds and selections.

The run directory's ledger is the source of truth; the store is a queryable record of it, written with
idempotent upserts inside transactions, so replaying a round after a crash never duplicates rows.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from activelab.errors import StateError
from activelab.records import METRIC_COLUMNS, RoundRecord

#: The results store's file name in a results folder (``--out``).
STORE_NAME = "activelab.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created TEXT NOT NULL, finished TEXT, status TEXT NOT NULL,
    dataset TEXT NOT NULL, strategy TEXT NOT NULL, model TEXT NOT NULL, seed INTEGER NOT NULL,
    run_dir TEXT NOT NULL, config TEXT NOT NULL, environment TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT NOT NULL REFERENCES runs(run_id), round INTEGER NOT NULL, n_labelled INTEGER NOT NULL,
    test_accuracy REAL, test_macro_f1 REAL, val_accuracy REAL, epochs INTEGER,
    seconds_train REAL, seconds_evaluate REAL, seconds_score REAL, seconds_select REAL,
    PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS selections (
    run_id TEXT NOT NULL REFERENCES runs(run_id), round INTEGER NOT NULL, rank INTEGER NOT NULL,
    item_id INTEGER NOT NULL, score REAL, label INTEGER, PRIMARY KEY (run_id, round, rank));
"""


class Store:
    """A SQLite results store at ``path`` (created on first use)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=30)
            connection.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise StateError(f"{self.path} is not a usable activelab results store ({error}).") from None
        return connection

    def record_run(self, run_id: str, *, created: str, dataset: str, strategy: str, model: str, seed: int,
                   run_dir: Path, config: dict, environment: dict) -> None:
        """Insert the run; a resumed run keeps its creation time and is marked running again."""
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO "
                "UPDATE SET status = 'running', finished = NULL, config = excluded.config",
                (run_id, created, dataset, strategy, model, seed, str(run_dir), json.dumps(config, sort_keys=True),
                 json.dumps(environment, sort_keys=True)))

    def record_round(self, run_id: str, record: RoundRecord) -> None:
        """Upsert one round's metrics and timings."""
        values = [getattr(record, column) for column in METRIC_COLUMNS]
        with closing(self._connect()) as connection, connection:
            connection.execute(f"INSERT OR REPLACE INTO rounds (run_id, {', '.join(METRIC_COLUMNS)}) "
                               f"VALUES (?{', ?' * len(METRIC_COLUMNS)})", [run_id, *values])

    def record_selection(self, run_id: str, round_index: int, ids: list[int], scores: list[float | None],
                         labels: list[int]) -> None:
        """Replace the selection of one round (ids in priority order, their scores and labels)."""
        with closing(self._connect()) as connection, connection:
            connection.execute("DELETE FROM selections WHERE run_id = ? AND round = ?", (run_id, round_index))
            connection.executemany(
                "INSERT INTO selections VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, round_index, rank, item, score, label)
                 for rank, (item, score, label) in enumerate(zip(ids, scores, labels))])

    def finish_run(self, run_id: str, finished: str) -> None:
        """Mark the run finished."""
        with closing(self._connect()) as connection, connection:
            connection.execute("UPDATE runs SET status = 'finished', finished = ? WHERE run_id = ?",
                               (finished, run_id))

    def runs(self) -> list[dict]:
        """Every run with its last round's metrics, oldest first."""
        query = """
            SELECT r.run_id, r.status, r.dataset, r.strategy, r.model, r.seed, r.created,
                   (SELECT COUNT(*) FROM rounds WHERE run_id = r.run_id) AS rounds,
                   last.n_labelled, last.test_accuracy, last.test_macro_f1
            FROM runs r LEFT JOIN rounds last ON last.run_id = r.run_id
                AND last.round = (SELECT MAX(round) FROM rounds WHERE run_id = r.run_id)
            ORDER BY r.created, r.run_id"""
        return self._query(query)

    def run(self, run_id: str) -> dict | None:
        """One run's row with its config and environment decoded, or None."""
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        row = rows[0]
        row["config"] = json.loads(row["config"])
        row["environment"] = json.loads(row["environment"])
        return row

    def rounds(self, run_id: str | None = None) -> list[dict]:
        """Round rows (of one run, or of all runs), ordered by run and round."""
        if run_id is None:
            return self._query("SELECT * FROM rounds ORDER BY run_id, round")
        return self._query("SELECT * FROM rounds WHERE run_id = ? ORDER BY round", (run_id,))

    def selections(self, run_id: str) -> list[dict]:
        """Selection rows of one run, ordered by round and rank."""
        return self._query("SELECT * FROM selections WHERE run_id = ? ORDER BY round, rank", (run_id,))

    def _query(self, query: str, parameters: tuple = ()) -> list[dict]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(query, parameters)]


def export_rounds(store: Store, fmt: str) -> str:
    """All rounds of all runs, joined with each run's dataset, strategy and seed, as CSV or JSON text."""
    runs = {row["run_id"]: row for row in store.runs()}
    rows = [{"run_id": row["run_id"], "dataset": runs[row["run_id"]]["dataset"],
             "strategy": runs[row["run_id"]]["strategy"], "seed": runs[row["run_id"]]["seed"],
             **{column: row[column] for column in METRIC_COLUMNS}} for row in store.rounds()]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run_id", "dataset", "strategy", "seed", *METRIC_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
