"""A lock file so that two processes never work in the same run directory at once.

The lock holds the owner's pid and host. A lock whose process no longer exists on this host is stale
(the owner was killed) and is taken over; a live owner makes the second process stop with a clear error.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from activelab.errors import StateError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager holding ``<run_dir>/lock`` for the duration of a run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "lock"

    def __enter__(self) -> "RunLock":
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(owner)
            return self
        raise StateError(f"{self.path.parent} is in use by another activelab process (see {self.path}).")

    def _remove_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), holder["host"]
        except (OSError, ValueError, KeyError, TypeError):
            holder = None
        if holder is None or (host == socket.gethostname() and not _alive(pid)):
            self.path.unlink(missing_ok=True)

    def __exit__(self, *exc_info) -> None:
        self.path.unlink(missing_ok=True)
