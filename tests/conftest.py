"""Shared fixtures: a private activelab cache per test session and the real Fashion-MNIST dataset."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="activelab-test-cache-"))
os.environ.setdefault("ACTIVELAB_CACHE", str(_SESSION_CACHE))


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST from the local copy (`make test` installs it); the tests never download."""
    from activelab.data.sources import get_source

    return get_source("fashion-mnist").load(download_missing=False)
