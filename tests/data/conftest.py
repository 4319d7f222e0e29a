"""Shared fixtures of the data tests: every test gets its own empty cache and data root."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path_factory, monkeypatch):
    """Point ACTIVELAB_CACHE and ACTIVELAB_DATA at fresh folders, so nothing touches the real cache."""
    roots = tmp_path_factory.mktemp("roots")
    monkeypatch.setenv("ACTIVELAB_CACHE", str(roots / "cache"))
    monkeypatch.setenv("ACTIVELAB_DATA", str(roots / "data"))
    return roots
