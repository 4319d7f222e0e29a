"""The registry of dataset sources.

Every module in this package registers its sources on import with :func:`register_source`; this package
imports all of them, so a new source is one new module.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from activelab.data.base import Dataset
from activelab.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """A registered dataset source.

    ``load(data_dir, **options)`` builds the :class:`Dataset`; ``locate(data_dir)`` returns the folder
    holding its files or None; ``options`` names the keyword options it accepts (``binary``, ``bands``...).
    ``classes`` is the number of classes, or None for the sources of your own data (image-folder,
    image-csv, arrays), whose classes are read from the data.
    """

    name: str
    description: str
    load: Callable[..., Dataset]
    locate: Callable[[Path | None], Path | None]
    classes: int | None
    size: str
    options: tuple[str, ...] = field(default=())


_SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Add ``source`` to the registry (names are unique)."""
    if source.name in _SOURCES:
        raise ValueError(f"source {source.name!r} is registered twice")
    _SOURCES[source.name] = source
    return source


def sources() -> dict[str, Source]:
    """All registered sources by name."""
    return dict(_SOURCES)


def get_source(name: str) -> Source:
    """The source registered as ``name`` (underscores and hyphens are interchangeable)."""
    key = name.replace("_", "-").lower()
    if key not in _SOURCES:
        raise ConfigError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(_SOURCES))}.")
    return _SOURCES[key]


def data_roots() -> list[Path]:
    """Folders searched for datasets, in order: ``$ACTIVELAB_DATA``, ``~/.cache/activelab``, system data."""
    roots = []
    if os.environ.get("ACTIVELAB_DATA"):
        roots.append(Path(os.environ["ACTIVELAB_DATA"]).expanduser())
    roots.append(cache_root())
    roots.append(Path("/usr/share/datasets"))
    return roots


def cache_root() -> Path:
    """Where activelab downloads and converts data (``$ACTIVELAB_CACHE``, default ``~/.cache/activelab``)."""
    return Path(os.environ.get("ACTIVELAB_CACHE", Path.home() / ".cache" / "activelab")).expanduser()


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Source", "cache_root", "data_roots", "get_source", "register_source", "sources"]
