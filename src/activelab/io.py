"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the
target, and the folder is fsynced. The file gets the usual mode of a new file under the process's umask
(``tempfile`` would leave it readable by its owner only). A failure (disk full, permission) removes the temporary file and
raises :class:`StateError` with one sentence; the previous file is untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from activelab.errors import StateError


def default_file_mode() -> int:
    """The permission bits ``open()`` would give a new file now: ``0o666`` less the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise StateError(f"could not write {path} ({error.strerror or error}).") from None
    try:
        os.fchmod(handle, default_file_mode())
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise StateError(f"could not write {path} ({error.strerror or error}); the previous version is intact.") from None
    _fsync_folder(path.parent)


def atomic_write_json(path: Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
