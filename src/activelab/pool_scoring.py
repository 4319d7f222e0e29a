"""Pool scoring past one process and past memory: outputs cached on disk by chunks, or scored on Ray.

:func:`score_pool` takes the arguments of :func:`activelab.inference.pool_outputs` and returns the same
arrays. It scores the pool a chunk at a time (``chunk_size`` items, rounded up to a whole number of
scoring batches so that every batch holds the same items as in one call over the whole pool, and the
results are identical to it bit for bit), and two options change where the chunks go and where they
are scored:

``cache_dir``
    Every output is a ``.npy`` file in that folder, written chunk by chunk through a memory map and
    returned opened read-only (``np.load(mmap_mode="r")``), so a 1,000,000-image pool needs memory for one
    chunk, not for the pool. After each chunk the maps are flushed and a marker ``done/CCCCCC.json`` is
    written atomically; a process killed while scoring continues from the finished chunks when called
    again with the same model, pool and options (``manifest.json`` records what they were, and a folder
    holding another scoring job is cleared and started afresh). One folder per round of a run.
``executor="ray"``
    The unfinished chunks become a Ray Data dataset of ``(index, position)`` rows, one block per chunk,
    and ``map_batches`` scores them on a pool of ``workers`` actors, each holding one copy of the model
    and running torch with the cluster's CPUs shared out among the workers (:func:`activelab.threads.threads_per_worker`).
    The model travels as its state dict and a :class:`ModelRecipe` that rebuilds the network; the
    dataset travels pickled (a file-backed dataset as its path, so every node must see the same files).
    Results stream back into the same arrays by index. Ray is imported only here, and only then.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from activelab import inference
from activelab.config import EXECUTORS
from activelab.data.base import Dataset
from activelab.errors import ConfigError, UserError
from activelab.executors import RAY_HINT
from activelab.threads import thread_environment, threads_per_worker
from activelab.inference import POOL_OUTPUTS, pool_outputs
from activelab.io import atomic_write_json
from activelab.models import build_model
from activelab.models.heads import ActiveModel

#: Items per chunk: the unit of work of a Ray worker and of resuming after a crash.
CHUNK_SIZE = 8192
#: What a cache folder's scoring job was (model, pool, options); a folder whose manifest differs is cleared.
MANIFEST = "manifest.json"
#: The folder of the finished chunks' markers.
DONE = "done"
#: Version of the cache layout, part of the manifest.
_LAYOUT = 1


@dataclass(frozen=True)
class ModelRecipe:
    """How to rebuild a run's network in another process, before its state dict is loaded into it.

    Exactly one of ``name`` (a model name for :func:`activelab.models.build_model`) or ``factory`` (the
    callable a Python run was created with; a module that is not an ActiveModel gets activelab's head,
    as :class:`activelab.run.Run` does). Pretrained weights are not needed: the state dict replaces every
    tensor, so a worker needs neither ``--weights`` nor the weight cache.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    name: str | None = None
    factory: Callable[[], nn.Module] | None = None

    def __post_init__(self):
        if (self.name is None) == (self.factory is None):
            raise ValueError("a ModelRecipe needs exactly one of a model name or a factory")

    def build(self) -> ActiveModel:
        """A fresh network of the recipe's architecture (random weights)."""
        if self.factory is None:
            return build_model(self.name, self.input_shape, self.num_classes)
        model = self.factory()
        if not isinstance(model, ActiveModel):
            model = ActiveModel.from_backbone(model, self.num_classes, self.input_shape)
        return model


def score_pool(model: ActiveModel, dataset: Dataset, positions: np.ndarray, wanted: set[str], *,
               cache_dir: str | Path | None = None, chunk_size: int = CHUNK_SIZE, executor: str = "local",
               ray_address: str | None = None, workers: int | None = None, recipe: ModelRecipe | None = None,
               **options) -> dict[str, np.ndarray]:
    """:func:`~activelab.inference.pool_outputs` of ``model`` for ``positions``, chunked, cached and/or on Ray.

    Parameters
    ----------
    model, dataset, positions, wanted, options
        As for :func:`~activelab.inference.pool_outputs` (``mc_samples``, ``batch_size``, ``device``,
        ``num_workers``, ``seed``, ``progress``, ``description``); the results are identical to it.
    cache_dir : path, optional
        Write the outputs to memory-mapped ``.npy`` files there and resume from its finished chunks; the
        arrays returned are read-only memory maps of those files. None: arrays in memory.
    chunk_size : int
        Items per chunk, rounded up to a multiple of the scoring batch size.
    executor : {"local", "ray"}
        ``local`` scores in this process; ``ray`` on a Ray cluster (``pip install 'activelab[ray]'``).
    ray_address : str, optional
        ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``; None uses the Ray instance this process is
        connected to, or starts a local one (kept until the process ends, so later rounds reuse it).
    workers : int, optional
        Ray actors, each with one copy of the model (default: one per CPU of the cluster).
    recipe : ModelRecipe
        How to rebuild ``model`` on a worker; needed with ``executor="ray"``.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; choose local or ray.")
    if executor != "ray" and (ray_address is not None or workers is not None):
        raise ConfigError("a Ray address or worker count needs the Ray executor (--executor ray).")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"`workers`={workers!r} must be a whole number >= 1.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"`chunk_size`={chunk_size!r} must be a whole number >= 1.")
    if executor == "ray" and recipe is None:
        raise ConfigError("scoring on Ray needs the model's recipe (ModelRecipe) to rebuild it on the workers.")
    unknown = set(wanted) - set(POOL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown pool outputs {sorted(unknown)}")
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    settings = _settings(model, dataset, positions, wanted, options)
    if positions.size == 0 or (executor == "local" and cache_dir is None):
        return pool_outputs(model, dataset, positions, wanted, **options)
    chunk = -(-chunk_size // settings["batch_size"]) * settings["batch_size"]
    key = {"layout": _LAYOUT, "items": int(positions.size), "chunk": chunk, "wanted": sorted(wanted),
           "positions": hashlib.sha256(positions.tobytes()).hexdigest(), "model": state_digest(model),
           "dataset": dataset.fingerprint(),
           **{name: str(settings[name]) for name in ("mc_samples", "batch_size", "seed", "device")}}
    store = _ChunkStore(None if cache_dir is None else Path(cache_dir), key)
    quiet = {**options, "progress": False}
    with tqdm(total=positions.size, initial=store.items_done, desc=settings["description"], leave=False,
              disable=not settings["progress"]) as bar:
        if executor == "ray":
            _score_on_ray(model, recipe, dataset, positions, wanted, quiet, store, bar, ray_address, workers,
                          device=torch.device(settings["device"]))
        else:
            for start in store.unfinished():
                index = np.arange(start, min(start + chunk, positions.size))
                store.put(index, pool_outputs(model, dataset, positions[index], wanted, **quiet))
                bar.update(index.size)
    return store.result()


def discard_cache(cache_dir: str | Path) -> None:
    """Delete a cache folder :func:`score_pool` wrote (the pool's outputs are large), if it exists."""
    folder = Path(cache_dir)
    if not folder.is_dir():
        return
    _clear(folder)
    if not any(folder.iterdir()):
        folder.rmdir()


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of ``model``'s state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _settings(model, dataset, positions, wanted, options) -> dict:
    """Every argument of ``pool_outputs`` as it will run, defaults filled in (a TypeError for an unknown one)."""
    bound = inspect.signature(inference.pool_outputs).bind(model, dataset, positions, wanted, **options)
    bound.apply_defaults()
    return dict(bound.arguments)


# ------------------------------------------------------------------------------------------ the chunk store


class _ChunkStore:
    """The outputs of one scoring job, in memory or as ``.npy`` memory maps in ``folder``, filled by chunks.

    Arrays are allocated when the first rows arrive (their widths come from those rows). ``put`` writes
    rows by their index into the positions; a chunk whose rows have all arrived is flushed to disk and
    then marked done, so a marker always means the chunk's values are on disk.
    """

    def __init__(self, folder: Path | None, key: dict):
        self.folder, self.key = folder, key
        self.items, self.chunk = key["items"], key["chunk"]
        self.lengths = np.minimum(self.chunk, self.items - np.arange(0, self.items, self.chunk))
        self.received = np.zeros(self.lengths.size, dtype=np.int64)
        self.arrays: dict[str, np.ndarray] = {}
        if folder is not None:
            self._open()

    @property
    def items_done(self) -> int:
        return int(self.lengths[self.received == self.lengths].sum())

    def unfinished(self) -> list[int]:
        """The first item index of every chunk not yet done."""
        return [int(i) * self.chunk for i in np.flatnonzero(self.received < self.lengths)]

    def put(self, index: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """Store ``outputs`` (``[T, B, C]`` for ``probs_T_N_C``, ``[B, ...]`` otherwise) of items ``index``."""
        if not self.arrays:
            self._allocate(outputs)
        rows = slice(int(index[0]), int(index[-1]) + 1) if _is_run(index) else index
        for name, values in outputs.items():
            if name == "probs_T_N_C":
                self.arrays[name][:, rows] = values
            else:
                self.arrays[name][rows] = values
        chunks, counts = np.unique(index // self.chunk, return_counts=True)
        self.received[chunks] += counts
        finished = [int(c) for c in chunks if self.received[c] == self.lengths[c]]
        if finished and self.folder is not None:
            for array in self.arrays.values():
                array.flush()
            if not (self.folder / MANIFEST).exists():
                atomic_write_json(self.folder / MANIFEST, self.key)
            for chunk in finished:
                atomic_write_json(self.folder / DONE / f"{chunk:06d}.json",
                                  {"start": chunk * self.chunk, "stop": chunk * self.chunk + int(self.lengths[chunk])})

    def result(self) -> dict[str, np.ndarray]:
        """The complete outputs: read-only memory maps of the files, or the in-memory arrays."""
        if self.folder is None:
            return self.arrays
        for array in self.arrays.values():
            array.flush()
        return {name: np.load(self._path(name), mmap_mode="r") for name in self.key["wanted"]}

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def _allocate(self, outputs: dict[str, np.ndarray]) -> None:
        for name, values in outputs.items():
            shape = list(values.shape)
            shape[1 if name == "probs_T_N_C" else 0] = self.items
            if self.folder is None:
                self.arrays[name] = np.empty(shape, dtype=values.dtype)
            else:
                self.arrays[name] = np.lib.format.open_memmap(self._path(name), mode="w+", dtype=values.dtype,
                                                              shape=tuple(shape))

    def _open(self) -> None:
        """Resume the job the folder holds when it is this one, else clear the folder for it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / DONE).mkdir(exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the scoring cache {self.folder} ({error.strerror}).") from None
        try:
            same = json.loads((self.folder / MANIFEST).read_text()) == self.key
        except (OSError, ValueError):
            same = False
        if same:
            try:
                self.arrays = {name: np.load(self._path(name), mmap_mode="r+") for name in self.key["wanted"]}
                same = all(array.shape[1 if name == "probs_T_N_C" else 0] == self.items
                           for name, array in self.arrays.items())
            except (OSError, ValueError):
                same = False
        if not same:
            self.arrays = {}
            _clear(self.folder)
            (self.folder / DONE).mkdir()
            return
        for marker in (self.folder / DONE).glob("*.json"):
            chunk = int(marker.stem)
            if 0 <= chunk < self.lengths.size:
                self.received[chunk] = self.lengths[chunk]


def _clear(folder: Path) -> None:
    """Remove what a scoring job leaves in ``folder`` (manifest, markers, output files), nothing else."""
    (folder / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(folder / DONE, ignore_errors=True)
    for name in POOL_OUTPUTS:
        (folder / f"{name}.npy").unlink(missing_ok=True)


def _is_run(index: np.ndarray) -> bool:
    """Whether ``index`` is consecutive increasing integers (then rows are written as one slice)."""
    return index.size > 0 and int(index[-1]) - int(index[0]) + 1 == index.size and bool(np.all(np.diff(index) == 1))


# ------------------------------------------------------------------------------------------ Ray


def _import_ray():
    """``ray`` and ``ray.data``; one-sentence ConfigError saying what to install when either is missing."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"scoring on Ray needs Ray Data, which is not installed: {RAY_HINT}.") from None
    return ray


def _connect(ray, address: str | None) -> None:
    """Connect to the cluster at ``address``, or start a local instance; nothing when already connected."""
    if ray.is_initialized():
        return
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address is not None:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"at {address}" if address else "on this machine"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot start or reach a Ray cluster {where} ({first}).") from None


def _shippable(recipe: ModelRecipe, ray) -> bytes:
    """The recipe pickled for the workers; ConfigError in one sentence when its factory cannot be.

    A factory from an installed package travels by reference (every node has the package); one from any
    other module (a script, a notebook, a file next to it) travels with its module's code, since the
    workers cannot import that module.
    """
    factory = recipe.factory
    name = None if factory is None else getattr(factory, "__module__", None) or type(factory).__module__
    module = sys.modules.get(name) if name not in (None, "__main__") else None  # __main__ goes by value anyway
    by_value = module is not None and not _installed(module)
    if by_value:
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        return ray.cloudpickle.dumps(recipe)
    except Exception as error:  # cloudpickle raises whatever the object's reducer raises
        label = getattr(factory, "__qualname__", type(factory).__name__)
        raise ConfigError(f"the model factory {label} cannot be sent to Ray workers ({type(error).__name__}: "
                          f"{error}); build the network without such objects, or score without Ray.") from None
    finally:
        if by_value:
            ray.cloudpickle.unregister_pickle_by_value(module)


def _installed(module) -> bool:
    """Whether ``module`` comes from an installed distribution (site-packages), or is built in."""
    path = getattr(module, "__file__", None)
    return path is None or any(part in ("site-packages", "dist-packages") for part in Path(path).parts)


def _score_on_ray(model, recipe, dataset, positions, wanted, options, store, bar, address, workers, *,
                  device: torch.device) -> None:
    """Score the store's unfinished chunks with Ray Data and put the results into ``store`` as they come."""
    ray = _import_ray()
    import pyarrow as pa

    payload = _shippable(recipe, ray)
    blocks = [pa.table({"index": index, "position": positions[index]})
              for index in (np.arange(start, min(start + store.chunk, positions.size)) for start in store.unfinished())]
    if not blocks:
        return
    _connect(ray, address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or cpus
    threads = threads_per_worker(cpus, workers)
    gpus = 1 if device.type == "cuda" else 0
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    shared = [ray.put(dataset), ray.put(state)]  # in a list: the actors fetch them, once per node
    with _quiet_ray_data(ray):  # before the dataset is made: it keeps a copy of the context
        scored = ray.data.from_arrow(blocks).map_batches(
            _RayScorer, batch_size=None, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads, num_gpus=gpus, runtime_env={"env_vars": thread_environment(threads)},
            fn_constructor_kwargs=dict(recipe=payload, shared=shared, wanted=sorted(wanted), options=options,
                                       chunk=store.chunk, threads=threads))
        try:
            for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
                outputs = {name: batch[name] for name in wanted}
                if "probs_T_N_C" in outputs:
                    outputs["probs_T_N_C"] = np.ascontiguousarray(outputs["probs_T_N_C"].transpose(1, 0, 2))
                store.put(np.asarray(batch["index"], dtype=np.int64), outputs)
                bar.update(len(batch["index"]))
        except UserError as error:  # Ray's wrapper is also an instance of the worker's error class
            original = getattr(error, "cause", error)
            sentence = str(original).strip().splitlines()[0]  # Ray Data appends its retry advice
            raise type(original)(sentence) from None


@contextlib.contextmanager
def _quiet_ray_data(ray):
    """Ray Data without its progress bars and log lines, raising a worker's own exception (not a wrapper)."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.raise_original_map_exception
    context.enable_progress_bars, context.raise_original_map_exception = False, True
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.enable_progress_bars, context.raise_original_map_exception = saved
        logger.setLevel(level)


def _root_cause(error: Exception) -> str:
    """``Type: message`` of the innermost error, also when Ray wrapped it with its traceback as the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Error" in lines[-1].partition(":")[0]:
        return lines[-1]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


class _RayScorer:
    """A Ray Data actor: one copy of the model, scoring blocks of ``(index, position)`` rows chunk by chunk."""

    def __init__(self, recipe: bytes, shared: list, wanted: list[str], options: dict, chunk: int, threads: int):
        import ray

        torch.set_num_threads(threads)  # the OMP_NUM_THREADS family is in the actor's runtime_env
        self.wanted, self.options, self.chunk = set(wanted), options, chunk
        self.error = None
        try:
            self.dataset, state = ray.get(shared)
            self.model = ray.cloudpickle.loads(recipe).build()
            self.model.load_state_dict(state)
        except Exception as error:  # raised on the first batch, where Ray Data hands it to the driver
            self.error = ConfigError(f"a Ray worker could not load the model or the dataset ({_root_cause(error)}); "
                                     "every node needs activelab, the code they come from and the data files.")
            return
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        index, positions = batch["index"], batch["position"]
        starts = np.flatnonzero(np.diff(index // self.chunk, prepend=-1))  # one pool_outputs call per chunk
        parts = [pool_outputs(self.model, self.dataset, positions[a:b], self.wanted, **self.options)
                 for a, b in zip(starts, [*starts[1:], index.size])]
        outputs = {"index": index}
        for name in self.wanted:
            if name == "probs_T_N_C":  # Ray's batch axis comes first
                outputs[name] = np.concatenate([part[name].transpose(1, 0, 2) for part in parts])
            else:
                outputs[name] = np.concatenate([part[name] for part in parts])
        return outputs


__all__ = ["CHUNK_SIZE", "ModelRecipe", "discard_cache", "score_pool", "state_digest"]
