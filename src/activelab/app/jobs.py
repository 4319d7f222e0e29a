"""The labelling app's background job: train, evaluate and choose the next batch while a person labels.

"Suggest" starts one job at a time in a thread of the server process: ``Run.query(n)`` trains a new model
when the labels changed (outside the run's lock, so labelling goes on), evaluates it on the person's test
labels and selects the next batch. A thread rather than a subprocess: the job shares the open Run (the
dataset and model checks are done once) and needs no second copy of torch in memory; training releases
the interpreter lock in torch's kernels, so the pages stay responsive.

The job's state is written to ``job.json`` (atomically) when it starts, changes phase and ends, and its
progress (training steps done / planned, reported by a Lightning logger) is kept in memory for the page
to poll. A server that stops while a job runs leaves ``job.json`` saying ``running``; the next server
marks it ``failed`` with the reason when it starts (:meth:`Jobs.recover`), so the person sees it and
clicks Suggest again: nothing is dropped silently, and the run itself resumes cleanly (a model whose
weights were saved before the stop is recorded rather than trained again).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pytorch_lightning.loggers import Logger

from activelab.callbacks import Callback
from activelab.errors import ConfigError, UserError
from activelab.io import atomic_write_json

if TYPE_CHECKING:
    from activelab.app.project import Project
    from activelab.run import Run

log = logging.getLogger(__name__)

JOB_FILE = "job.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class JobBusy(ConfigError):
    """A job is already running."""


class _StepLogger(Logger):
    """A Lightning logger that only reports the trainer's global step to the job."""

    def __init__(self, jobs: "Jobs"):
        super().__init__()
        self._jobs = jobs

    @property
    def name(self) -> str:
        return "activelab-app"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if step is not None:
            self._jobs.steps_done(int(step) + 1)


class Jobs(Callback):
    """The project's job: one at a time, its state in ``job.json``; also the Run callback that hands the
    trainer a step logger while a job trains."""

    def __init__(self, root: Path):
        self.path = Path(root) / JOB_FILE
        self._lock = threading.Lock()
        self._job: dict | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state
    def recover(self) -> dict | None:
        """At server start: a job the last server left ``running`` is marked ``failed``; returns it."""
        job = self._read()
        if job is not None and job.get("state") == "running":
            job.update(state="failed", finished=_now(), progress=None,
                       error=f"the server stopped while this job was {job.get('phase', 'running')} "
                             f"(started {job.get('started')}); click Suggest to run it again.")
            atomic_write_json(self.path, job)
        with self._lock:
            self._job = job
        return job

    def status(self) -> dict | None:
        """The current or last job: id, state (running, done, failed), phase, progress 0..1, error, times."""
        with self._lock:
            return None if self._job is None else {key: value for key, value in self._job.items()
                                                   if key != "planned_steps"}

    def running(self) -> bool:
        with self._lock:
            return self._job is not None and self._job["state"] == "running"

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"state": "failed", "error": f"{self.path.name} could not be read; click Suggest to start again."}

    def _update(self, **changes: object) -> None:
        """Change the job: written to ``job.json`` first, then shown, so a page never reports a phase that a
        server stopping now would not find on disk."""
        with self._lock:
            job = {**self._job, **changes}
            atomic_write_json(self.path, {key: value for key, value in job.items() if key != "planned_steps"})
            self._job = job

    # ------------------------------------------------------------------ running
    def start_suggest(self, project: "Project", n: int) -> dict:
        """Start training (when the labels changed) and selecting ``n`` images in the background."""
        run = project.run
        with self._lock:
            if self._job is not None and self._job["state"] == "running":
                raise JobBusy("a job is already running; wait for it to finish.")
            state = project.ledger()
            planned = _planned_steps(run, state.n_labelled)
            self._job = {"id": uuid.uuid4().hex[:12], "kind": "suggest", "n": int(n), "state": "running",
                         "phase": "waiting", "progress": 0.0, "error": None, "started": _now(), "finished": None,
                         "planned_steps": planned}
        atomic_write_json(self.path, {key: value for key, value in self._job.items() if key != "planned_steps"})
        self._thread = threading.Thread(target=self._suggest, args=(run, int(n)), daemon=True,
                                        name="activelab-suggest")
        self._thread.start()
        return self.status()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the job's thread (tests and a clean shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _suggest(self, run: "Run", n: int) -> None:
        try:
            must_train = bool(run.state.n_labelled) and run.stale
            self._update(phase="training" if must_train else "selecting")
            if must_train:
                run.fit()
            self._update(phase="selecting", progress=0.95)
            batch = run.query(n)
            self._update(state="done", phase="done", progress=1.0, finished=_now(), round=batch.round,
                         selected=len(batch))
        except UserError as error:
            self._update(state="failed", finished=_now(), error=str(error))
        except Exception as error:  # a bug must still end the job visibly, with the traceback in the log
            log.exception("the suggest job failed")
            self._update(state="failed", finished=_now(), error=f"unexpected error: {error!r}")

    def steps_done(self, steps: int) -> None:
        with self._lock:
            if self._job is not None and self._job["state"] == "running":
                planned = max(1, self._job.get("planned_steps") or 1)
                self._job["progress"] = round(min(0.9, 0.9 * steps / planned), 3)

    # ------------------------------------------------------------------ Run callback
    def training_loggers(self, run: "Run", round_index: int) -> list:
        return [_StepLogger(self)] if self.running() else []


def _planned_steps(run: "Run", n_labelled: int) -> int:
    """Optimiser steps a round will take: ``max_epochs`` epochs of enough batches for ``min_steps``."""
    settings = run.settings
    batches = max(settings.min_batches_per_epoch, -(-max(1, n_labelled) // settings.batch_size))
    return settings.max_epochs * batches
