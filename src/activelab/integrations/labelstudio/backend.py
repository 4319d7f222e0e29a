"""The backend's state across projects: where Label Studio is, each project's learner, the training queue.

A :class:`Backend` holds the backend directory for the life of the process (``<dir>/lock``, so two
backends never write the same files), one :class:`~.learner.ProjectLearner` per Label Studio project
under ``<dir>/projects/<id>/`` (loaded at start), and one training thread.

Label Studio waits about a second for a webhook's answer, so ``/webhook`` only asks for training;
:class:`TrainingQueue` trains one project at a time in its own thread, and requests for a project that
arrive while it trains or waits are merged into one more training, on the labels of that moment.

Where Label Studio is, and with which key, comes from the command line (``--label-studio-url``,
``--api-key``) or else from Label Studio's ``/setup`` call, which sends its address and a legacy token
of the project's creator; that token is kept in memory only, never written to disk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from activelab.errors import ConfigError, UserError
from activelab.integrations.labelstudio.client import LabelStudioClient
from activelab.integrations.labelstudio.labelconfig import LabelConfig
from activelab.integrations.labelstudio.learner import ProjectLearner
from activelab.integrations.labelstudio.settings import BackendSettings
from activelab.runlock import RunLock

log = logging.getLogger(__name__)


class TrainingQueue:
    """One thread that trains the projects asked for, one at a time, merging repeated requests."""

    def __init__(self, train) -> None:
        self._train = train
        self._pending: OrderedDict[int, None] = OrderedDict()
        self._running: int | None = None
        self._messages: dict[int, str] = {}
        self._condition = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="activelab-label-studio-training", daemon=True)
        self._thread.start()

    def request(self, project_id: int) -> None:
        """Train ``project_id`` soon (once, however often it is asked before its training starts)."""
        with self._condition:
            self._pending[project_id] = None
            self._condition.notify_all()

    def state(self, project_id: int) -> dict:
        """``training``, ``queued`` or ``idle``, and what its last training did."""
        with self._condition:
            phase = ("training" if self._running == project_id else
                     "queued" if project_id in self._pending else "idle")
            return {"training": phase, "last_message": self._messages.get(project_id)}

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or training; False when ``timeout`` seconds passed first."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and self._running is None, timeout)

    def stop(self) -> None:
        """Finish the training in progress, drop the queued ones, and end the thread."""
        with self._condition:
            self._stopping = True
            self._pending.clear()
            self._condition.notify_all()
        self._thread.join()

    def _work(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                project_id, _ = self._pending.popitem(last=False)
                self._running = project_id
            try:
                message = self._train(project_id)
                log.info("%s", message)
            except UserError as error:
                message = f"project {project_id}: training failed: {error}"
                log.warning("%s", message)
            except Exception as error:  # a bug: keep serving, leave the traceback in the log
                message = f"project {project_id}: training failed unexpectedly ({type(error).__name__}: {error})"
                log.exception("%s", message)
            with self._condition:
                self._messages[project_id] = message
                self._running = None
                self._condition.notify_all()


class Backend:
    """Everything the HTTP endpoints act on; use as a context manager (or call :meth:`close`).

    Parameters
    ----------
    folder : Path
        The backend directory (created when missing).
    settings : BackendSettings
        Model, strategy and training settings, shared by every project.
    label_studio_url, api_key : str, optional
        Where Label Studio is and the key to its API; when missing, the values ``/setup`` sends are used.
    """

    def __init__(self, folder: Path, settings: BackendSettings, *, label_studio_url: str | None = None,
                 api_key: str | None = None):
        self.folder = Path(folder)
        self.settings = settings
        self._url, self._key = label_studio_url or None, api_key or None
        if self._url is not None:
            LabelStudioClient(self._url, None).close()   # checks the address now, not at the first request
        try:
            (self.folder / "projects").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the backend directory {self.folder} ({error.strerror}).") from None
        self._held = contextlib.ExitStack()
        self._held.enter_context(RunLock(self.folder))
        self._guard = threading.Lock()
        self._projects: dict[int, ProjectLearner] = {}
        self._setup: dict[int, tuple[str | None, str | None]] = {}
        self._clients: dict[tuple[str, str | None], LabelStudioClient] = {}
        try:
            for child in sorted((self.folder / "projects").iterdir()):
                if child.is_dir() and child.name.isdigit():
                    self._projects[int(child.name)] = ProjectLearner(child, int(child.name), settings)
        except BaseException:
            self._held.close()
            raise
        self.training = TrainingQueue(self._train)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop the training thread (after the training in progress), close connections, free the directory."""
        self.training.stop()
        for client in self._clients.values():
            client.close()
        self._held.close()

    def project(self, project_id: int) -> ProjectLearner:
        """The learner of ``project_id``, created with its folder on first use."""
        with self._guard:
            if project_id not in self._projects:
                folder = self.folder / "projects" / str(project_id)
                self._projects[project_id] = ProjectLearner(folder, project_id, self.settings)
            return self._projects[project_id]

    def knows(self, project_id: int) -> bool:
        """Whether ``project_id`` has a learner already (connected before, or found in the directory)."""
        with self._guard:
            return project_id in self._projects

    def projects(self) -> list[ProjectLearner]:
        with self._guard:
            return [self._projects[key] for key in sorted(self._projects)]

    def remember_setup(self, project_id: int, hostname: str | None, access_token: str | None) -> None:
        """Keep the address and token Label Studio's ``/setup`` sent, for when the command line gave none."""
        with self._guard:
            self._setup[project_id] = (hostname or None, access_token or None)

    def client(self, project_id: int) -> LabelStudioClient | None:
        """A client for the Label Studio of ``project_id``; None when no address is known yet."""
        with self._guard:
            hostname, token = self._setup.get(project_id, (None, None))
            url, key = self._url or hostname, self._key or token
            if url is None:
                return None
            if (url, key) not in self._clients:
                self._clients[(url, key)] = LabelStudioClient(url, key)
            return self._clients[(url, key)]

    def _train(self, project_id: int) -> str:
        learner = self.project(project_id)
        config: LabelConfig | None = learner.label_config()
        if config is None:
            return (f"project {project_id}: no labelling config known yet; it arrives with Label Studio's "
                    "/setup, /predict or webhook calls")
        client = self.client(project_id)
        if client is None:
            return (f"project {project_id}: no Label Studio address to fetch annotations from; start the backend "
                    "with --label-studio-url or reconnect it in Label Studio so that /setup sends one")
        return learner.train(config, client)
