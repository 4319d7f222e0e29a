"""Checking what a user passes to a source: its options (``--source-option KEY=VALUE``) and ``--data-dir``.

Every check raises :class:`~activelab.errors.ConfigError` (or
:class:`~activelab.errors.DatasetNotFoundError` for a path that does not exist) with one sentence naming
the option and what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from activelab.errors import ConfigError, DatasetNotFoundError

_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def check_options(source: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Raise ConfigError when ``options`` holds a name that ``source`` does not support."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
        raise ConfigError(f"the {source} source has no option {unknown[0]!r}; {accepted}.")


def flag_option(name: str, value: Any) -> bool:
    """A boolean option given as a bool, 0/1 or a word such as "true"/"no"."""
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ConfigError(f"option {name}={value!r} must be true or false.")


def size_option(value: Any) -> tuple[int, int] | None:
    """An image size given as ``224``, ``"224"``, ``"240,320"``/``"240x320"`` or ``(240, 320)`` (height, width)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
    else:
        parts = [value] if isinstance(value, int) else value
    try:
        size = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"option size={value!r} must be a positive height,width such as 224 or 240,320.")
    return size


def names_option(name: str, value: Any) -> tuple[str, ...]:
    """A list of names given as ``"a,b,c"`` or a sequence of strings (non-empty, no duplicates)."""
    parts = value.split(",") if isinstance(value, str) else value
    is_strings = isinstance(parts, (list, tuple)) and all(isinstance(part, str) for part in parts)
    names = tuple(part.strip() for part in parts) if is_strings else ()
    if not names or not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"option {name}={value!r} must be a comma-separated list of distinct, non-empty names.")
    return names


def given_path(data_dir: Path | str | None) -> Path | None:
    """The ``--data-dir`` path when it is given and exists, else None (the ``locate`` of your-own-data sources)."""
    if data_dir is None or not Path(data_dir).expanduser().exists():
        return None
    return Path(data_dir).expanduser()


def required_path(data_dir: Path | str | None, source: str, what: str) -> Path:
    """The ``--data-dir`` path that a your-own-data source needs, which must exist.

    Parameters
    ----------
    source : str
        The source's name, for the message.
    what : str
        What the path should point at, such as "a CSV file with the columns path,label".
    """
    if data_dir is None:
        raise ConfigError(f"the {source} source needs --data-dir pointing at {what}.")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{path} does not exist; point --data-dir at {what}.")
    return path
