"""Sweeps: many runs from one file, the cross product of its axes, run in parallel and resumable.

A sweep file (TOML, or YAML with the same structure) has three sections::

    [sweep]
    out = "results/fashion-small"     # the sweep's results folder (relative to the current directory)
    # name = "{data_class}-{sampling_method}-seed{seed}"   # optional run-name template
    # cpus_per_cell = 1               # threads of each cell, and the CPUs it asks Ray for

    [fixed]                           # RunConfig fields every cell shares
    data_class = "fashion-mnist"
    max_epochs = 20

    [axes]                            # RunConfig fields that vary: the cells are their cross product
    sampling_method = ["random", "margin"]
    seed = 3                          # a count means seeds 0, 1, 2
    budget = [                        # an axis that is not a field: tables that set fields together
      {name = "small", n_train_images = 20, al_samples_per_iter = 10, al_iter = 5},
      {name = "large", n_train_images = 100, al_samples_per_iter = 100, al_iter = 4},
    ]

Keys are :class:`~activelab.config.RunConfig` field names (hyphens or underscores), each set in one place
only; ``out`` and ``run_name`` belong to the sweep. :func:`load_sweep` checks everything (sections, keys,
types, empty axes, every cell's :meth:`RunConfig.validated`, run names, budgets against ``pool_size``, and
runs already on disk with other settings) before anything runs, and raises a one-sentence
:class:`~activelab.errors.ConfigError` naming the file and the key.

Every cell is a normal run named after its axis values (``fashion-mnist-margin-cnn-seed3``, then
``<axis><value>`` for every other field axis and the ``name`` of a table axis's value). Each cell has a
results folder of its own, ``<out>/cells/<run>/`` (its store ``activelab.sqlite`` and its run directory
``<run>/``), so a store is only ever written by one process, also on a shared filesystem of a Ray cluster
where SQLite's locks cannot be trusted. The sweep driver, the only writer of ``<out>/activelab.sqlite``,
copies every cell's rows into it (idempotent upserts) as cells end, so ``activelab runs --out <out>``
lists the whole sweep. ``<out>/sweep-status.json`` records each cell's status and error, rewritten
atomically at every change.

:func:`run_sweep` runs the cells that are not finished (an interrupted one resumes where it stopped) with
the local executor (one process per cell, at most ``workers`` at once, each with fixed thread counts) or
with Ray (one task per cell); :func:`dry_run` lists the cells and estimates the work left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import math
import re
import sqlite3
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from activelab.config import RunConfig, closest
from activelab.errors import ConfigError, StateError, UserError
from activelab.io import atomic_write_json
from activelab.store import STORE_NAME
from activelab.threads import usable_cpus

#: The sweep's status file in its results folder: every cell's status, error and times.
STATUS_FILE = "sweep-status.json"
#: The folder of ``out`` that holds one results folder per cell.
CELLS_DIR = "cells"
#: The sections of a sweep file.
SECTIONS = ("sweep", "fixed", "axes")
#: The keys of the ``[sweep]`` section and what each must be.
SWEEP_KEYS = {"out": "text", "name": "text", "cpus_per_cell": "a whole number >= 1", "description": "text"}
#: Fields the sweep sets itself.
RESERVED = {"out": "set the results folder with `out` in [sweep]",
            "run_name": "cells are named after their axis values, or by `name` in [sweep]"}
#: Fields the default run name always starts with, as :attr:`RunConfig.name` does.
NAME_FIELDS = ("data_class", "sampling_method", "model_class", "seed")
#: Names people write for an axis, and the field they mean.
ALIASES = {"strategy": "sampling_method", "strategies": "sampling_method", "dataset": "data_class",
           "datasets": "data_class", "data": "data_class", "model": "model_class", "models": "model_class",
           "seeds": "seed"}
#: The longest run name (a folder name; most filesystems allow 255 bytes).
MAX_NAME = 200
#: Cell statuses in the status file and the progress display.
STATUSES = ("pending", "running", "done", "skipped", "failed", "waiting")

log = logging.getLogger(__name__)

_FIELDS = {item.name: item for item in dataclasses.fields(RunConfig)}
_DEFAULT_CONFIG = RunConfig()


# ------------------------------------------------------------------------------------------ the sweep


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its name, the axis values that make it, and its validated configuration.

    ``config.out`` is the cell's own results folder (``<out>/cells/<name>``), so its run directory is
    ``config.run_dir`` and its store ``folder / "activelab.sqlite"``.
    """

    name: str
    axes: dict
    config: RunConfig

    @property
    def folder(self) -> Path:
        """The cell's results folder (its store and its run directory)."""
        return Path(self.config.out)

    @property
    def run_dir(self) -> Path:
        """The cell's run directory."""
        return self.config.run_dir

    @property
    def rounds(self) -> int:
        """Trainings the run makes: ``al_iter + 1`` (the last acquired batch is trained on too)."""
        return self.config.al_iter + 1

    def labels_per_round(self) -> list[int]:
        """The number of labels each round trains on (a run without initial labels starts with a batch)."""
        config = self.config
        first = config.n_train_images or config.al_samples_per_iter
        return [first + index * config.al_samples_per_iter for index in range(self.rounds)]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the file it came from, its results folder and its cells in file order."""

    path: Path
    out: Path
    cells: tuple[Cell, ...]
    axes: dict
    cpus_per_cell: int = 1
    description: str = ""

    @property
    def store_path(self) -> Path:
        """The sweep's merged results store."""
        return self.out / STORE_NAME

    @property
    def status_path(self) -> Path:
        """The sweep's status file."""
        return self.out / STATUS_FILE


def load_sweep(path: str | Path) -> Sweep:
    """Read and check the sweep file ``path`` (``.toml``, ``.yaml`` or ``.yml``); nothing is written.

    Parameters
    ----------
    path : str or Path
        The sweep file (format in this module's docstring).

    Returns
    -------
    Sweep
        Its cells, each with a validated :class:`~activelab.config.RunConfig`.

    Raises
    ------
    ConfigError
        One sentence naming the file and the key for anything that cannot run: an unreadable file, an
        unknown section, key or strategy (with the closest name), an empty axis, a value of the wrong
        type, a cell whose configuration :meth:`RunConfig.validated` refuses, two cells with one name, a
        budget larger than ``pool_size``, or a cell whose run directory holds a run with other settings.
    """
    path = Path(path)
    document, is_yaml = _read_document(path)
    where = _Where(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold the sections [sweep], [fixed] and [axes], got {type(document).__name__}.")
    for section in document:
        if section not in SECTIONS:
            raise ConfigError(f"{where(section)}: unknown section{_hint(section, SECTIONS)}; "
                              f"a sweep file has [sweep], [fixed] and [axes].")
    sections = {}
    for section in SECTIONS:
        value = document.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where(section)}: must be a table of keys, got {_show(value)}.")
        sections[section] = value
    settings = _sweep_settings(sections["sweep"], where, path)
    fixed = {}
    for key, value in sections["fixed"].items():
        name = _field_key(key, "fixed", where)
        if name in fixed:
            raise ConfigError(f"{where('fixed', key)}: {name} is given twice (with - and _); give it once.")
        fixed[name] = _checked_value(name, value, where("fixed", key), is_yaml)
    axes = _axes(sections["axes"], where, is_yaml)
    _check_single_place(fixed, axes, where)
    out = Path(settings["out"]).expanduser().resolve()
    cells = _cells(fixed, axes, settings, out, where)
    return Sweep(path=path, out=out, cells=tuple(cells), axes={axis.name: axis.labels for axis in axes},
                 cpus_per_cell=settings["cpus_per_cell"], description=settings.get("description", ""))


class _Where:
    """Names a place in the sweep file: ``FILE, [section] key``."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, section: str, key: str | None = None) -> str:
        return f"{self.path}, [{section}]" + (f" {key}" if key is not None else "")


def _read_document(path: Path) -> tuple[object, bool]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path} must be a sweep file ending in .toml, .yaml or .yml.")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"the sweep file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"the sweep file {path} cannot be read ({reason}).") from None
    if suffix == ".toml":
        toml = _toml_module()
        try:
            return toml.loads(text), False
        except toml.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML ({error}).") from None
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"reading the YAML sweep file {path} needs PyYAML (pip install pyyaml); "
                          "or write the sweep in TOML.") from None
    try:
        return yaml.safe_load(text), True
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise ConfigError(f"{path} is not valid YAML ({problem}).") from None


def _toml_module():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading a TOML sweep file on Python 3.10 needs tomli (pip install tomli).") from None
    return tomllib


def _sweep_settings(section: dict, where: _Where, path: Path) -> dict:
    settings = {"out": f"results/{path.stem}", "cpus_per_cell": 1}
    for key, value in section.items():
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{where('sweep', key)}: unknown key{_hint(key, SWEEP_KEYS)}; [sweep] takes "
                              f"{', '.join(SWEEP_KEYS)}.")
        if key == "cpus_per_cell":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where('sweep', key)}: must be a whole number >= 1, got {_show(value)}.")
        elif not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where('sweep', key)}: must be non-empty text, got {_show(value)}.")
        settings[key] = value
    return settings


def _field_key(key: object, section: str, where: _Where) -> str:
    """``key`` as a RunConfig field name; ConfigError for an unknown or reserved one."""
    name = str(key).replace("-", "_")
    if name in RESERVED:
        raise ConfigError(f"{where(section, key)}: the sweep sets this field itself; {RESERVED[name]}.")
    if name not in _FIELDS:
        raise ConfigError(f"{where(section, key)}: unknown field{_field_hint(name)}; the keys are the fields of "
                          f"`activelab run` (its flags with underscores).")
    return name


def _field_hint(name: str) -> str:
    if name in ALIASES:
        return f" (the field is {ALIASES[name]})"
    return _hint(name, [item for item in _FIELDS if item not in RESERVED])


def _hint(name: object, choices: Iterable[str]) -> str:
    close = closest(str(name), list(choices))
    return f" (did you mean {close}?)" if close else ""


_KINDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
          "dict": "a table of options", "list": "a list"}


def _checked_value(name: str, value: object, place: str, is_yaml: bool) -> object:
    """``value`` after checking it has the type of the RunConfig field ``name`` (YAML's "1e-3" is a number)."""
    kinds = [part.strip() for part in str(_FIELDS[name].type).split("|")]
    optional = "None" in kinds
    kind = next(part for part in kinds if part != "None")
    if value is None and optional:
        return None
    if kind == "float" and is_yaml and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    ok = {"str": lambda: isinstance(value, str),
          "int": lambda: isinstance(value, int) and not isinstance(value, bool),
          "float": lambda: isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": lambda: isinstance(value, bool),
          "dict": lambda: isinstance(value, dict),
          "list": lambda: isinstance(value, list)}[kind]()
    if not ok:
        wanted = _KINDS[kind] + (" (or left out)" if optional else "")
        raise ConfigError(f"{place}: must be {wanted}, got {_show(value)}.")
    if kind == "float":
        return float(value)
    return value


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str) if value is not None else "nothing"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})" if value is not None else text


@dataclass(frozen=True)
class _Axis:
    """An axis: a field with its values, or a group whose values are tables of fields."""

    name: str
    values: tuple          # a field axis: the values; a group: dicts of field -> value
    labels: tuple          # one run-name part per value
    group: bool

    def fields(self) -> set[str]:
        if not self.group:
            return {self.name}
        return {key for value in self.values for key in value}


def _axes(section: dict, where: _Where, is_yaml: bool) -> list[_Axis]:
    axes = []
    for key, values in section.items():
        name = str(key).replace("-", "_")
        place = where("axes", key)
        if name in RESERVED:
            raise ConfigError(f"{place}: the sweep sets this field itself; {RESERVED[name]}.")
        if name == "seed" and isinstance(values, int) and not isinstance(values, bool):
            if values < 1:
                raise ConfigError(f"{place}: a count of seeds must be >= 1, got {values}.")
            values = list(range(values))
        if not isinstance(values, list):
            how = " or a count of seeds" if name == "seed" else ""
            raise ConfigError(f"{place}: an axis must be a list of values{how}, got {_show(values)}; "
                              f"put a single value in [fixed].")
        if not values:
            raise ConfigError(f"{place}: the axis is empty; give it at least one value or remove it.")
        if any(axis.name == name for axis in axes):
            raise ConfigError(f"{place}: the axis {name} is given twice (with - and _); give it once.")
        if name in _FIELDS:
            checked = tuple(_checked_value(name, value, place, is_yaml) for value in values)
            axis = _Axis(name, checked, tuple(f"{name}{_label(value)}" if name not in NAME_FIELDS else _label(value)
                                              for value in checked), group=False)
        else:
            axis = _group_axis(name, key, values, place, where, is_yaml)
        _check_no_repeats(axis, place)
        axes.append(axis)
    return axes


def _group_axis(name: str, key: object, values: list, place: str, where: _Where, is_yaml: bool) -> _Axis:
    """An axis whose values are tables setting several fields together (e.g. a labelling budget)."""
    if not all(isinstance(value, dict) for value in values) or closest(name, _FIELDS) or name in ALIASES:
        raise ConfigError(f"{place}: unknown field{_field_hint(name)}; an axis is a field of `activelab run`, "
                          "or a list of tables of fields (each may have a `name` for run names).")
    tables, labels = [], []
    for index, value in enumerate(values):
        table = {}
        label = value.get("name")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"{place}: the `name` of value {index + 1} must be non-empty text, got {_show(label)}.")
        for field_key, field_value in value.items():
            if field_key == "name":
                continue
            field_name = _field_key(field_key, "axes", where)
            table[field_name] = _checked_value(field_name, field_value, f"{place} (value {index + 1}) {field_key}",
                                               is_yaml)
        if not table:
            raise ConfigError(f"{place}: value {index + 1} sets no field; give each table fields to set.")
        tables.append(table)
        labels.append(_label(label) if label is not None else "-".join(_label(item) for item in table.values()))
    return _Axis(name, tuple(tables), tuple(labels), group=True)


def _check_no_repeats(axis: _Axis, place: str) -> None:
    seen = {}
    for value, label in zip(axis.values, axis.labels):
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"{place}: the value {_show(value)} is listed twice; each value makes its own cells.")
        seen[key] = label


def _check_single_place(fixed: dict, axes: list[_Axis], where: _Where) -> None:
    owner = {key: "[fixed]" for key in fixed}
    for axis in axes:
        for name in sorted(axis.fields()):
            if name in owner:
                raise ConfigError(f"{where('axes', axis.name)}: the field {name} is also set in {owner[name]}; "
                                  "set each field in one place.")
            owner[name] = f"[axes] {axis.name}"


def _label(value: object) -> str:
    """A value as a piece of a run name: letters, digits, ``.``, ``+``, ``-`` and ``_`` only."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = format(value, "g")
    elif isinstance(value, dict):
        text = "-".join(f"{key}{_label(item)}" for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        text = "+".join(_label(item) for item in value)
    elif value is None:
        text = "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("._") or "_"


def _cells(fixed: dict, axes: list[_Axis], settings: dict, out: Path, where: _Where) -> list[Cell]:
    template = settings.get("name")
    cells, names = [], {}
    for choice in itertools.product(*(range(len(axis.values)) for axis in axes)):
        fields = dict(fixed)
        given = {}
        for axis, index in zip(axes, choice):
            value = axis.values[index]
            fields.update(value if axis.group else {axis.name: value})
            given[axis.name] = axis.labels[index] if axis.group else value
        fields = _absolute_paths(fields)
        fields.setdefault("progress", False)
        name = _cell_name(fields, axes, choice, template, where)
        if name in names:
            raise ConfigError(f"{where('sweep', 'name') if template else where('axes')}: two cells get the run name "
                              f"{name} ({_describe(names[name])} and {_describe(given)}); "
                              + ("put every axis in the name template." if template else "make the values differ."))
        if len(name) > MAX_NAME:
            raise ConfigError(f"{where('sweep', 'name') if template else where('axes')}: the run name {name[:40]}... "
                              f"is longer than {MAX_NAME} characters; set a shorter template with `name` in [sweep].")
        names[name] = given
        config = RunConfig(**fields, out=str(out / CELLS_DIR / name), run_name=name)
        cells.append(Cell(name=name, axes=given, config=_validated(config, name, fixed, axes, choice, where)))
    for cell in cells:
        _check_budget(cell, where)
        _check_existing_run(cell, where)
    return cells


def _absolute_paths(fields: dict) -> dict:
    """Relative ``data_dir`` and ``weights`` as absolute paths, so every worker finds them wherever it runs."""
    for key in ("data_dir", "weights"):
        if isinstance(fields.get(key), str) and fields[key]:
            fields[key] = str(Path(fields[key]).expanduser().resolve())
    return fields


def _cell_name(fields: dict, axes: list[_Axis], choice: tuple, template: str | None, where: _Where) -> str:
    values = {**{key: getattr(_DEFAULT_CONFIG, key) for key in _FIELDS}, **fields}
    if template is None:
        parts = [_label(values["data_class"]), _label(values["sampling_method"]), _label(values["model_class"]),
                 f"seed{_label(values['seed'])}"]
        parts += [axis.labels[index] for axis, index in zip(axes, choice) if axis.name not in NAME_FIELDS]
        return "-".join(parts)
    for axis, index in zip(axes, choice):
        if axis.group:
            values[axis.name] = axis.labels[index]
    try:
        text = template.format_map(values)
    except KeyError as error:
        raise ConfigError(f"{where('sweep', 'name')}: the template names {{{error.args[0]}}}, which is neither a "
                          "field nor an axis.") from None
    except (ValueError, IndexError, AttributeError) as error:
        raise ConfigError(f"{where('sweep', 'name')}: the template {template!r} cannot be filled in "
                          f"({error}).") from None
    return _label(text)


def _describe(given: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in given.items()) or "no axes"


def _validated(config: RunConfig, name: str, fixed: dict, axes: list[_Axis], choice: tuple,
               where: _Where) -> RunConfig:
    """``config.validated()``, its ConfigError prefixed with the file and the key it most likely concerns."""
    try:
        return config.validated()
    except UserError as error:
        message = str(error)
        places = [(where("axes", axis.name), axis.values[index]) for axis, index in zip(axes, choice)]
        places += [(where("fixed", key), {key: value}) for key, value in fixed.items()]
        for place, value in places:
            if _mentions(message, value, place):
                raise ConfigError(f"{place}: {message}") from None
        raise ConfigError(f"{where('axes')}: the cell {name} cannot run: {message}") from None


def _mentions(message: str, value: object, place: str) -> bool:
    """Whether ``message`` speaks of the key at ``place`` or of one of the values set there."""
    key = place.rsplit(" ", 1)[-1]
    names = [key] + (list(value) if isinstance(value, dict) else [])
    for name in names:
        flag = _FLAGS.get(name, f"--{name.replace('_', '-')}")
        if f"`{name}`" in message or flag in message or re.search(rf"\b{name}\b", message):
            return True
    items = list(value.values()) if isinstance(value, dict) else [value]
    items = [part for item in items for part in (item if isinstance(item, list) else [item])]
    return any(isinstance(item, str) and item and (f"'{item}'" in message or f" {item} " in message)
               for item in items)


#: Fields whose command-line flag is not the field's name with hyphens (the messages name the flag).
_FLAGS = {"source_kwargs": "--source-option", "strategy_kwargs": "--strategy-option"}


def _check_budget(cell: Cell, where: _Where) -> None:
    config = cell.config
    if config.pool_size is None:
        return
    budget = cell.labels_per_round()[-1]
    if budget > config.pool_size:
        raise ConfigError(f"{where('axes')}: the cell {cell.name} labels {budget} items in all (n_train_images, "
                          f"al_samples_per_iter, al_iter) but pool_size is {config.pool_size}.")


def _check_existing_run(cell: Cell, where: _Where) -> None:
    """Refuse a cell whose run directory already holds a run with settings that change results."""
    if not (cell.run_dir / "config.json").is_file():
        return
    try:
        saved = RunConfig.load_saved(cell.run_dir)
        changed = saved.validated().differences(cell.config)
    except UserError as error:
        raise ConfigError(f"{where('sweep', 'out')}: the cell {cell.name} cannot resume its run ({error})") from None
    if changed:
        raise ConfigError(f"{where('sweep', 'out')}: {cell.run_dir} holds a run of the cell {cell.name} with other "
                          f"settings ({', '.join(changed)}); restore them or give the sweep another out folder.")


# ------------------------------------------------------------------------------------------ progress of cells


@dataclass(frozen=True)
class CellProgress:
    """How far a cell's run is: evaluated rounds in its ledger, and whether it is finished."""

    rounds_done: int
    finished: bool
    started: bool


def cell_progress(cell: Cell) -> CellProgress:
    """Read the cell's ledger and store; finished = every round evaluated and the store says finished.

    A ledger with every round but a store that still says ``running`` (killed while closing) counts as
    not finished: running the cell again only re-syncs the store and marks it finished.
    """
    from activelab.data.state import LabelState
    from activelab.store import Store

    path = cell.run_dir / "state.json"
    if not path.is_file():
        return CellProgress(0, False, False)
    try:
        state = LabelState.load(path)
    except StateError:
        return CellProgress(0, False, True)
    evaluated = sum(1 for record in state.rounds if record.evaluated)
    complete = (len(state.rounds) >= cell.rounds and state.rounds[-1].evaluated and state.pending is None)
    if not complete:
        return CellProgress(min(evaluated, cell.rounds), False, True)
    row = Store(cell.folder / STORE_NAME).run(cell.name)
    return CellProgress(cell.rounds, bool(row and row["status"] == "finished"), True)


# ------------------------------------------------------------------------------------------ dry run


@dataclass(frozen=True)
class CellPlan:
    """A cell in a dry run: its status, rounds done of all, and the labels its remaining rounds train on."""

    name: str
    axes: dict
    status: str
    rounds_done: int
    rounds: int
    labels_left: int
    seconds_left: float | None


@dataclass(frozen=True)
class SweepPlan:
    """What :func:`run_sweep` would do: every cell, the work left and a rough time estimate.

    ``seconds`` is the estimated wall time with ``workers`` cells at once (None without finished rounds
    of the same dataset and model to estimate from); ``basis`` says where the estimate comes from.
    """

    sweep: Sweep
    cells: tuple[CellPlan, ...]
    workers: int
    seconds: float | None
    basis: str

    @property
    def to_run(self) -> list[CellPlan]:
        """The cells a sweep would start (not finished)."""
        return [cell for cell in self.cells if cell.status != "finished"]

    def __str__(self) -> str:
        sweep = self.sweep
        axes = " x ".join(f"{name} ({len(labels)})" for name, labels in sweep.axes.items()) or "no axes"
        lines = [f"sweep {sweep.path}: {len(self.cells)} cell(s) from {axes}; results in {sweep.out}"]
        width = max([len(cell.name) for cell in self.cells] + [4])
        lines.append(f"  {'cell':<{width}}  {'status':<9} {'rounds':>7}  {'labels to train on':>18}  estimate")
        for cell in self.cells:
            estimate = "-" if cell.status == "finished" else format_seconds(cell.seconds_left)
            lines.append(f"  {cell.name:<{width}}  {cell.status:<9} {cell.rounds_done:>3}/{cell.rounds:<3}  "
                         f"{cell.labels_left:>18,}  {estimate}")
        to_run = self.to_run
        rounds = sum(cell.rounds - cell.rounds_done for cell in to_run)
        labels = sum(cell.labels_left for cell in to_run)
        finished = len(self.cells) - len(to_run)
        summary = (f"work left: {len(to_run)} cell(s) ({finished} finished already), {rounds} training round(s) "
                   f"on {labels:,} labels in all")
        if to_run:
            summary += (f"; about {format_seconds(self.seconds)} with {self.workers} worker(s) ({self.basis})"
                        if self.seconds is not None else f"; no time estimate ({self.basis})")
        lines.append(summary + ".")
        return "\n".join(lines)


def dry_run(sweep: Sweep, *, workers: int | None = None, executor: str = "local") -> SweepPlan:
    """List the cells of ``sweep``, their status on disk and an estimate of the work left; writes nothing.

    The time estimate fits ``seconds per round = a + b * labels`` to the finished rounds of the same
    dataset and model in the sweep's store (training, evaluation, scoring and selection; a cell's process
    start and data loading come on top) and divides the total by the number of workers.
    """
    slots = _default_slots(sweep, workers, executor, len(sweep.cells))
    models = _timing_models(sweep)
    plans, total = [], 0.0
    known = True
    for cell in sweep.cells:
        progress = cell_progress(cell)
        status = "finished" if progress.finished else "partial" if progress.started else "new"
        left = cell.labels_per_round()[progress.rounds_done:]
        model = models.get((cell.config.data_class, cell.config.model_class))
        seconds = None if model is None else sum(model[0] + model[1] * labels for labels in left)
        if not progress.finished:
            if seconds is None:
                known = False
            else:
                total += seconds
        plans.append(CellPlan(cell.name, cell.axes, status, progress.rounds_done, cell.rounds,
                              sum(left) if not progress.finished else 0, seconds))
    rounds = sum(model[2] for model in models.values())
    if not models:
        basis = f"no finished rounds in {sweep.store_path} to estimate from yet"
    elif not known:
        basis = "some datasets or models have no finished rounds in the store yet"
    else:
        basis = f"from {rounds} finished round(s) in the store, training time only"
    return SweepPlan(sweep, tuple(plans), slots, total / slots if known else None, basis)


def _timing_models(sweep: Sweep) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Per (dataset, model): ``(a, b, rounds)`` of a least-squares fit of seconds per round on labels."""
    from activelab.store import Store

    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    stores = [sweep.store_path] + [cell.folder / STORE_NAME for cell in sweep.cells]
    seen = set()
    for path in stores:
        if not path.is_file():
            continue
        try:
            store = Store(path)
            runs = {row["run_id"]: row for row in store.runs()}
            rounds = store.rounds()
        except (UserError, OSError):
            continue
        for row in rounds:
            run = runs.get(row["run_id"])
            if run is None or (row["run_id"], row["round"]) in seen or row["seconds_evaluate"] is None:
                continue
            seen.add((row["run_id"], row["round"]))
            seconds = sum(row[key] or 0.0 for key in ("seconds_train", "seconds_evaluate", "seconds_score",
                                                        "seconds_select"))
            points.setdefault((_source_name(run["dataset"]), run["model"]), []).append((row["n_labelled"], seconds))
    models = {}
    for key, values in points.items():
        xs = [x for x, _ in values]
        ys = [y for _, y in values]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in values) / spread) if spread else 0.0
        models[key] = (max(0.0, mean_y - slope * mean_x), slope, len(values))
    # the store names datasets as their source does; cells name them as written, so add those spellings too
    for cell in sweep.cells:
        key = (_source_name(cell.config.data_class), cell.config.model_class)
        if key in models:
            models[(cell.config.data_class, cell.config.model_class)] = models[key]
    return models


def _source_name(name: str) -> str:
    return str(name).replace("_", "-").lower()


def format_seconds(seconds: float | None) -> str:
    """``45s``, ``3m12s``, ``2h05m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ------------------------------------------------------------------------------------------ running


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: cells run to the end now, skipped (finished before), failed, waiting.

    ``failed`` and ``waiting`` map a cell's run name to one sentence (a run waits when the dataset has no
    label for items its strategy chose; a person labels them and the sweep is run again).
    """

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether no cell failed."""
        return not self.failed

    def summary(self) -> str:
        """A few lines for a person: counts, the failed cells with their errors, and where the results are."""
        lines = [f"sweep {self.out}: {len(self.done)} cell(s) done, {len(self.skipped)} skipped (finished before), "
                 f"{len(self.failed)} failed" + (f", {len(self.waiting)} waiting for labels" if self.waiting else "")
                 + f", in {format_seconds(self.seconds)}."]
        for title, cells in (("failed", self.failed), ("waiting for labels", self.waiting)):
            if cells:
                lines.append(f"{title}:")
                lines += [f"  {name}: {message}" for name, message in cells.items()]
        lines.append(f"results: {self.out / STORE_NAME} (`activelab runs --out {self.out}`), "
                     f"status: {self.out / STATUS_FILE}")
        if self.failed:
            lines.append("run the same sweep again to retry the failed cells; finished cells are skipped.")
        return "\n".join(lines)


EXECUTORS = ("local", "ray")


def run_sweep(sweep: Sweep, *, executor: str = "local", workers: int | None = None, ray_address: str | None = None,
              progress: bool = True, stream: TextIO | None = None) -> SweepResult:
    """Run every cell of ``sweep`` that is not finished; an interrupted cell resumes where it stopped.

    Parameters
    ----------
    sweep : Sweep
        From :func:`load_sweep`.
    executor : {"local", "ray"}
        ``local``: one process per cell, at most ``workers`` at once (default: the usable cores divided by
        ``cpus_per_cell``), each with ``torch``/BLAS thread counts fixed before torch is imported.
        ``ray``: one Ray task per cell asking for ``cpus_per_cell`` CPUs and the cell's ``gpus``.
    workers : int, optional
        Cells at once (local: processes; Ray: tasks in flight, default the cluster's CPUs divided by
        ``cpus_per_cell``).
    ray_address : str, optional
        ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` of a running Ray cluster; None starts a local
        Ray instance for the sweep (and stops it afterwards). Only with ``executor="ray"``.
    progress : bool
        Show cells done / running / failed with elapsed and estimated remaining time on ``stream``
        (standard error by default).

    Returns
    -------
    SweepResult
        One failing cell does not stop the others: its error is in ``failed``, in ``sweep-status.json``
        and in the cell's log ``<out>/cells/<run>/cell.log``.

    Raises
    ------
    ConfigError
        For a bad executor, worker count or address, or Ray missing (``pip install 'activelab[ray]'``),
        before anything is written; StateError when another sweep works in the same folder.
    """
    from activelab import executors
    from activelab.runlock import RunLock

    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'{_hint(executor, EXECUTORS)}; choose local or ray.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"`workers`={workers!r} must be a whole number >= 1.")
    if ray_address is not None and executor != "ray":
        raise ConfigError("a Ray address (--ray-address) needs the Ray executor (--executor ray).")
    if executor == "ray":
        executors.import_ray()
    started = time.monotonic()
    result = SweepResult(out=sweep.out)
    states = {cell.name: cell_progress(cell) for cell in sweep.cells}
    to_run = [cell for cell in sweep.cells if not states[cell.name].finished]
    result.skipped = [cell.name for cell in sweep.cells if states[cell.name].finished]
    runner = (executors.RayExecutor(ray_address, workers=workers, cpus_per_cell=sweep.cpus_per_cell)
              if executor == "ray" and to_run else None)
    try:
        try:
            sweep.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the sweep's results folder {sweep.out} ({error.strerror}).") from None
        with RunLock(sweep.out):
            if executor == "local" and to_run:
                slots = _default_slots(sweep, workers, "local", len(to_run))
                runner = executors.LocalExecutor(slots, threads=_local_threads(sweep, workers, slots),
                                                 gpus=max(cell.config.gpus for cell in to_run))
            status = _StatusFile(sweep, executor, runner.slots if runner else 0, states)
            display = _Display(stream if stream is not None else sys.stderr, progress)
            try:
                _drive(sweep, to_run, states, runner, status, display, result, started)
            finally:
                if runner is not None:
                    runner.close()
                _merge_or_note(sweep, None)
                _in_sweep_order(sweep, result)
                result.seconds = time.monotonic() - started
                status.finish(result)
                display.close()
    finally:
        if runner is not None:
            runner.close()
    return result


def _in_sweep_order(sweep: Sweep, result: SweepResult) -> None:
    order = {cell.name: index for index, cell in enumerate(sweep.cells)}
    result.done.sort(key=order.__getitem__)
    result.failed = dict(sorted(result.failed.items(), key=lambda item: order[item[0]]))
    result.waiting = dict(sorted(result.waiting.items(), key=lambda item: order[item[0]]))


def _drive(sweep: Sweep, to_run: list[Cell], states: dict, runner, status: "_StatusFile", display: "_Display",
           result: SweepResult, started: float) -> None:
    """Start cells while slots are free, collect those that end, keep the status file and display current."""
    from activelab.executors import CellSpec

    queue = deque(to_run)
    rate = _Rate(_timing_models(sweep))
    running: dict[str, tuple[Cell, float]] = {}

    def show() -> None:
        eta = rate.remaining(queue, running, states, runner.slots if runner else 1)
        display.show(status.counts(), time.monotonic() - started, eta)

    show()
    while queue or running:
        ended = []
        while queue and len(running) < runner.slots:
            cell = queue.popleft()
            try:
                runner.start(CellSpec.for_cell(cell, cpus=sweep.cpus_per_cell))
            except (OSError, UserError) as error:  # this cell cannot start (its folder, say); the others can
                reason = getattr(error, "strerror", None) if isinstance(error, OSError) else None
                message = f"the cell could not start ({reason or error})."
                ended.append((cell.name, {"status": "failed", "error": message}))
                running[cell.name] = (cell, time.monotonic())
                continue
            running[cell.name] = (cell, time.monotonic())
            status.update(cell.name, "running")
        for name, outcome in ended + runner.wait(timeout=0.5):
            cell, _ = running.pop(name)
            state = outcome["status"]
            message = outcome.get("error")
            if state == "done":
                result.done.append(name)
            elif state == "waiting":
                result.waiting[name] = message
            else:
                state = "failed"
                result.failed[name] = message or "the cell failed without a message"
                display.note(f"cell {name} failed: {result.failed[name]}")
            rate.add(outcome)
            _merge_or_note(sweep, [cell])
            status.update(name, state, error=message, seconds=outcome.get("seconds"), threads=outcome.get("threads"),
                          omp_num_threads=outcome.get("omp_num_threads"))
        show()


def _merge_or_note(sweep: Sweep, cells: list[Cell] | None) -> None:
    """Merge cell stores into the sweep's store; a store that cannot be read is reported, not fatal.

    The rows stay in the cell's own store, and the next merge (at the end, or the next sweep) copies them.
    """
    try:
        merge_stores(sweep, cells)
    except (UserError, sqlite3.Error) as error:
        log.warning("the sweep's store %s is not up to date (%s); the next sweep merges again.",
                    sweep.store_path, error)


class _Rate:
    """Seconds per round for the remaining-time estimate: measured on cells of this sweep, else from the store."""

    def __init__(self, models: dict):
        self.models = models
        self.seconds = 0.0
        self.rounds = 0

    def add(self, outcome: dict) -> None:
        if outcome.get("rounds_run") and outcome.get("seconds"):
            self.seconds += float(outcome["seconds"])
            self.rounds += int(outcome["rounds_run"])

    def cell_seconds(self, cell: Cell, rounds_done: int) -> float | None:
        left = cell.labels_per_round()[rounds_done:]
        if self.rounds:
            return self.seconds / self.rounds * len(left)
        model = self.models.get((cell.config.data_class, cell.config.model_class))
        return None if model is None else sum(model[0] + model[1] * labels for labels in left)

    def remaining(self, queue: Iterable[Cell], running: dict, states: dict, slots: int) -> float | None:
        total = 0.0
        for cell in queue:
            seconds = self.cell_seconds(cell, states[cell.name].rounds_done)
            if seconds is None:
                return None
            total += seconds
        for cell, since in running.values():
            seconds = self.cell_seconds(cell, states[cell.name].rounds_done)
            if seconds is None:
                return None
            total += max(0.0, seconds - (time.monotonic() - since))
        return total / max(1, slots)


def _default_slots(sweep: Sweep, workers: int | None, executor: str, cells: int) -> int:
    """Cells at once: ``workers``, else the usable cores (local) divided by ``cpus_per_cell``, at most ``cells``."""
    if workers is not None:
        return max(1, min(workers, max(1, cells)))
    slots = max(1, usable_cpus() // sweep.cpus_per_cell)
    gpus = max((cell.config.gpus for cell in sweep.cells), default=0)
    if executor == "local" and gpus:
        from activelab.executors import visible_gpus

        slots = max(1, min(slots, visible_gpus() // gpus))
    return max(1, min(slots, max(1, cells)))


def _local_threads(sweep: Sweep, workers: int | None, slots: int) -> int:
    """Threads per cell: ``cpus_per_cell``, or the cores shared out among the workers when they are given."""
    if workers is None:
        return sweep.cpus_per_cell
    return max(1, usable_cpus() // slots)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _StatusFile:
    """``<out>/sweep-status.json``: every cell's status, error and times, rewritten atomically at each change."""

    def __init__(self, sweep: Sweep, executor: str, workers: int, states: dict):
        self.sweep = sweep
        self.document = {"sweep_file": str(sweep.path.resolve()), "out": str(sweep.out), "executor": executor,
                         "workers": workers, "started": _now(), "updated": _now(), "finished": None, "cells": {}}
        for cell in sweep.cells:
            finished = states[cell.name].finished
            self.document["cells"][cell.name] = {
                "status": "skipped" if finished else "pending", "axes": _jsonable(cell.axes),
                "run_dir": str(cell.run_dir), "log": str(cell.folder / "cell.log"), "error": None,
                "started": None, "ended": None, "seconds": None, "threads": None,
                "omp_num_threads": None}
        self.write()

    def update(self, name: str, status: str, *, error: str | None = None, seconds: float | None = None,
               threads: int | None = None, omp_num_threads: str | None = None) -> None:
        entry = self.document["cells"][name]
        entry["status"] = status
        if status == "running":
            entry.update(started=_now(), ended=None, error=None, seconds=None, threads=None, omp_num_threads=None)
        else:
            entry.update(ended=_now(), error=error, seconds=None if seconds is None else round(float(seconds), 3),
                         threads=threads, omp_num_threads=omp_num_threads)
        self.write()

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for entry in self.document["cells"].values():
            counts[entry["status"]] += 1
        return counts

    def finish(self, result: SweepResult) -> None:
        for entry in self.document["cells"].values():
            if entry["status"] == "running":  # interrupted: the next sweep resumes it
                entry.update(status="pending", ended=_now(), error="interrupted")
        self.document["finished"] = _now()
        self.document["seconds"] = round(result.seconds, 3)
        self.write()

    def write(self) -> None:
        self.document["updated"] = _now()
        atomic_write_json(self.sweep.status_path, self.document)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Display:
    """One progress line on standard error: rewritten in place on a terminal, a new line per change otherwise."""

    def __init__(self, stream: TextIO, enabled: bool):
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.shown = False
        self.last_key = None
        self.last_time = 0.0

    def line(self, counts: dict, elapsed: float, eta: float | None) -> str:
        total = sum(counts.values())
        finished = counts["done"] + counts["skipped"]
        text = (f"sweep: {finished}/{total} done ({counts['skipped']} skipped), {counts['running']} running, "
                f"{counts['failed']} failed")
        if counts["waiting"]:
            text += f", {counts['waiting']} waiting for labels"
        text += f" | {format_seconds(elapsed)} elapsed"
        if counts["running"] or counts["pending"]:
            text += f", ~{format_seconds(eta)} left"
        return text

    def show(self, counts: dict, elapsed: float, eta: float | None) -> None:
        if not self.enabled:
            return
        text = self.line(counts, elapsed, eta)
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self.shown = True
            return
        key = tuple(sorted(counts.items()))
        if key != self.last_key or now - self.last_time > 60:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_key, self.last_time = key, now

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r\x1b[K" if self.tty else "") + message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


# ------------------------------------------------------------------------------------------ merged store


def merge_stores(sweep: Sweep, cells: Iterable[Cell] | None = None) -> int:
    """Copy the rows of each cell's store into the sweep's store; returns the number of runs copied.

    Runs, rounds and selections are upserted, so merging again (after a crash, or a cell resumed by hand
    with ``activelab run --resume``) never duplicates a row. Only the sweep driver calls this, so the
    sweep's store has a single writer; each cell's store has a single writer too (its run's process).
    """
    from activelab.records import METRIC_COLUMNS, RoundRecord
    from activelab.store import Store

    target = None
    copied = 0
    for cell in sweep.cells if cells is None else cells:
        path = cell.folder / STORE_NAME
        if not path.is_file():
            continue
        source = Store(path)
        for row in source.runs():
            run = source.run(row["run_id"])
            if run is None:
                continue
            if target is None:
                sweep.out.mkdir(parents=True, exist_ok=True)
                target = Store(sweep.store_path)
            run_id = run["run_id"]
            target.record_run(run_id, created=run["created"], dataset=run["dataset"], strategy=run["strategy"],
                              model=run["model"], seed=run["seed"], run_dir=Path(run["run_dir"]),
                              config=run["config"], environment=run["environment"])
            for record in source.rounds(run_id):
                target.record_round(run_id, RoundRecord(**{column: record[column] for column in METRIC_COLUMNS}))
            selections: dict[int, list[dict]] = {}
            for selection in source.selections(run_id):
                selections.setdefault(selection["round"], []).append(selection)
            for round_index, rows in sorted(selections.items()):
                target.record_selection(run_id, round_index, [item["item_id"] for item in rows],
                                        [item["score"] for item in rows], [item["label"] for item in rows])
            if run["status"] == "finished":
                target.finish_run(run_id, run["finished"])
            copied += 1
    return copied


__all__ = ["CELLS_DIR", "Cell", "CellPlan", "CellProgress", "STATUS_FILE", "Sweep", "SweepPlan", "SweepResult",
           "cell_progress", "dry_run", "format_seconds", "load_sweep", "merge_stores", "run_sweep"]
