"""Acquisition strategies: pure functions over arrays, registered by name.

Every module in this package registers its family of strategies on import; this package imports all
of them, so ``get_strategy(name)`` sees every strategy without a hand-kept list.
"""

from __future__ import annotations

import importlib
import pkgutil

from activelab.errors import ConfigError
from activelab.strategies.base import INPUTS, Selection, Strategy, register, register_score, registry, select_top

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def get_strategy(name: str) -> Strategy:
    """Return the strategy registered as ``name`` (the seed's hyphen/underscore spellings both work)."""
    strategies = registry()
    key = name.replace("-", "_")
    if key not in strategies:
        known = ", ".join(sorted(strategies))
        raise ConfigError(f"unknown sampling method '{name}'; choose one of: {known}.")
    return strategies[key]


__all__ = ["INPUTS", "Selection", "Strategy", "get_strategy", "register", "register_score", "registry", "select_top"]
