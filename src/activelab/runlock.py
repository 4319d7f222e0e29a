"""An operating-system lock so that two processes never work in the same run directory at once.

``<run_dir>/lock`` is locked with ``filelock`` (``flock`` on POSIX systems): the lock belongs to the
open file, so it disappears with its process however that process ends, and a killed run never leaves a
lock behind that blocks the next one. While held, the file names the owner (pid, host, start time) so the
refusal can say who holds it; released, it is emptied but left in place (removing a lock file that
another process may be opening would let two processes lock two different files).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path

import filelock

from activelab.errors import StateError
from activelab.io import default_file_mode


class RunLock:
    """Context manager holding ``<run_dir>/lock`` for one step of a run (never waits)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "lock"
        self._lock = filelock.FileLock(self.path, timeout=0, mode=default_file_mode())

    def __enter__(self) -> "RunLock":
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StateError(f"{self.path.parent} is in use by another activelab process ({self._owner()}); "
                             "wait for it to finish or stop it.") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.path.write_text(json.dumps(owner))
        return self

    def _owner(self) -> str:
        try:
            owner = json.loads(self.path.read_text())
            return f"pid {int(owner['pid'])} on {owner['host']} since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"

    def __exit__(self, *exc_info) -> None:
        self.path.write_text("")
        self._lock.release()
