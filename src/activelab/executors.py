"""Where a sweep's cells run: local worker processes, or Ray tasks.

Both executors run :func:`execute_cell` once per cell, in a process whose thread counts were fixed before
torch was imported: the ``OMP_NUM_THREADS`` family of variables is in the process's environment from its
start and ``torch.set_num_threads`` is called first. Several processes each running torch with as many
threads as the machine has cores slow the same kernels down 5-10x on small machines.

* :class:`LocalExecutor`: one fresh Python process per cell (``subprocess``, the equivalent of the
  ``spawn`` start method with an explicit environment), at most ``slots`` at once. A fresh process per
  cell keeps cells apart: a cell that crashes the interpreter (out of memory, a segfault) fails alone,
  and memory is returned between cells. A worker dies with the sweep (``PR_SET_PDEATHSIG`` on Linux), so a
  killed sweep leaves no orphan holding a run's lock. Its output goes to ``<cell folder>/cell.log``.
* :class:`RayExecutor`: one Ray task per cell requesting ``num_cpus=cpus_per_cell`` and the cell's
  ``gpus``, with the thread variables in the task's ``runtime_env``. Ray is imported only here, and
  only when this executor is chosen.

An executor has ``slots`` (cells at once), ``start(spec)``, ``wait(timeout) -> [(name, outcome)]`` and
``close()``. An outcome is a dict: ``status`` (``done``, ``waiting`` or ``failed``), ``error`` (one sentence
for a :class:`~activelab.errors.UserError`, ``Type: message`` otherwise), ``seconds``, ``rounds_run``, and
``threads`` / ``omp_num_threads`` (torch's threads, and ``OMP_NUM_THREADS`` as the process started with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from activelab.errors import ConfigError, UserError
from activelab.threads import thread_environment

#: A cell's log file in its results folder.
LOG_FILE = "cell.log"
#: Where a local worker leaves its outcome for the driver.
RESULT_FILE = ".cell-result.json"
#: What to install for the Ray executor.
RAY_HINT = "pip install 'activelab[ray]'"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellSpec:
    """What a worker needs to run a cell: its run name, configuration (a dict), folder and resources."""

    name: str
    config: dict
    folder: str
    threads: int
    cpus: int
    gpus: int

    @classmethod
    def for_cell(cls, cell, *, cpus: int) -> "CellSpec":
        """The spec of a :class:`~activelab.sweep.Cell` asking for ``cpus`` CPUs (threads) and its ``gpus``."""
        return cls(cell.name, cell.config.to_dict(), str(cell.folder), threads=cpus, cpus=cpus,
                   gpus=cell.config.gpus)


def execute_cell(spec: dict) -> dict:
    """Run (or resume) one cell in this process and return its outcome; never raises for a failed run."""
    start = time.monotonic()
    threads = int(spec["threads"])
    inherited = os.environ.get("OMP_NUM_THREADS")  # set by the executor before this process imported torch
    os.environ.update(thread_environment(threads))  # for libraries loaded from now on
    import torch

    torch.set_num_threads(threads)
    placed = {"threads": torch.get_num_threads(), "omp_num_threads": inherited}
    from activelab.config import RunConfig
    from activelab.loop import run_experiment, waiting_for_labels

    config = RunConfig.from_dict(spec["config"])
    before = _rounds_in_ledger(config.run_dir)
    try:
        state = run_experiment(config)
    except UserError as error:
        log.error("the cell %s failed: %s", spec["name"], error)
        return {**_outcome("failed", str(error), start, before, config), **placed}
    except Exception as error:  # a bug or a library failure: keep the traceback in the cell's log
        log.error("the cell %s failed:\n%s", spec["name"], traceback.format_exc())
        return {**_outcome("failed", f"{type(error).__name__}: {_first_line(error)}", start, before, config), **placed}
    waiting = waiting_for_labels(state, config.run_dir)
    return {**_outcome("waiting" if waiting else "done", waiting, start, before, config), **placed}


def _outcome(status: str, error: str | None, start: float, before: int, config) -> dict:
    return {"status": status, "error": error, "seconds": time.monotonic() - start,
            "rounds_run": max(0, _rounds_in_ledger(config.run_dir) - before)}


def _rounds_in_ledger(run_dir: Path) -> int:
    """Evaluated rounds in a run directory's ledger (0 when there is none or it cannot be read)."""
    from activelab.data.state import LabelState

    try:
        return sum(1 for record in LabelState.load(Path(run_dir) / "state.json").rounds if record.evaluated)
    except UserError:
        return 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


def visible_gpus() -> int:
    """The number of GPUs torch sees here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ------------------------------------------------------------------------------------------ local processes


class LocalExecutor:
    """Runs each cell in a fresh Python process, at most ``slots`` at once, each with ``threads`` threads.

    With ``gpus`` > 0 each slot gets its own GPUs through ``CUDA_VISIBLE_DEVICES`` (slot ``i`` the devices
    ``i * gpus`` to ``(i + 1) * gpus - 1``).
    """

    def __init__(self, slots: int, *, threads: int, gpus: int = 0):
        self.slots = int(slots)
        self.threads = int(threads)
        self.gpus = int(gpus)
        self._running: dict[int, tuple[CellSpec, subprocess.Popen, object]] = {}

    def start(self, spec: CellSpec) -> None:
        """Start a worker process for ``spec`` in a free slot."""
        slot = next(index for index in range(self.slots) if index not in self._running)
        folder = Path(spec.folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULT_FILE).unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(thread_environment(self.threads))
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(slot * self.gpus + index) for index in range(self.gpus))
        payload = json.dumps({**asdict(spec), "threads": self.threads, "parent": os.getpid()})
        log_file = open(folder / LOG_FILE, "ab")
        log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} cell {spec.name} starts "
                       f"({self.threads} thread(s))\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            [sys.executable, "-c", "from activelab.executors import worker_main; worker_main()", payload],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
        self._running[slot] = (spec, process, log_file)

    @property
    def running(self) -> list[str]:
        """The names of the cells running now."""
        return [spec.name for spec, _, _ in self._running.values()]

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """The cells whose process ended within ``timeout`` seconds, with their outcomes."""
        deadline = time.monotonic() + timeout
        while True:
            ended = [slot for slot, (_, process, _) in self._running.items() if process.poll() is not None]
            if ended or time.monotonic() >= deadline or not self._running:
                break
            time.sleep(0.05)
        results = []
        for slot in ended:
            spec, process, log_file = self._running.pop(slot)
            log_file.close()
            results.append((spec.name, _local_outcome(spec, process.returncode)))
        return results

    def close(self) -> None:
        """Stop the cells still running (they resume on the next sweep): SIGTERM, then SIGKILL after 10 s."""
        for _, process, _ in self._running.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, process, log_file in self._running.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log_file.close()
        self._running.clear()


def _local_outcome(spec: CellSpec, returncode: int) -> dict:
    path = Path(spec.folder) / RESULT_FILE
    try:
        outcome = json.loads(path.read_text())
        path.unlink(missing_ok=True)
        return outcome
    except (OSError, ValueError):
        pass
    logfile = Path(spec.folder) / LOG_FILE
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        how = f"was killed by {name}"
    else:
        how = f"exited with code {returncode}"
    return {"status": "failed", "error": f"the cell's process {how} before it finished; see {logfile}.",
            "seconds": None, "rounds_run": 0}


def worker_main() -> None:
    """Entry point of a local worker process: ``python -c ... worker_main() PAYLOAD``."""
    payload = json.loads(sys.argv[1])
    _die_with_parent(int(payload["parent"]))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    outcome = execute_cell(payload)
    from activelab.io import atomic_write_json

    atomic_write_json(Path(payload["folder"]) / RESULT_FILE, outcome)
    sys.stdout.flush()
    sys.stderr.flush()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when the sweep that started it dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed sweep may leave this cell running to its end
        pass
    if os.getppid() != parent:
        os._exit(1)


# ------------------------------------------------------------------------------------------ Ray


def import_ray():
    """The ``ray`` module; ConfigError saying what to install when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"the Ray executor needs Ray, which is not installed: {RAY_HINT}.") from None
    return ray


class RayExecutor:
    """Runs each cell as one Ray task on a cluster (``address``) or on a local Ray instance it starts.

    Every task asks for ``cpus_per_cell`` CPUs and the cell's GPUs and runs with that many threads. At
    most ``workers`` tasks are in flight (default: the cluster's CPUs divided by ``cpus_per_cell``), so the
    display's "running" is true and the sweep can be stopped cleanly. The results folder must be on a
    filesystem every node shares.
    """

    def __init__(self, address: str | None, *, workers: int | None = None, cpus_per_cell: int = 1):
        ray = import_ray()
        self.ray = ray
        self.cpus_per_cell = int(cpus_per_cell)
        self.started = False
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            try:
                if address is None:
                    cpus = os.cpu_count() or 1
                    try:
                        cpus = len(os.sched_getaffinity(0)) or cpus
                    except (AttributeError, OSError):
                        pass
                    ray.init(num_cpus=max(cpus, self.cpus_per_cell * (workers or 1)), **options)
                    self.started = True
                else:
                    ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"at {address}" if address else "on this machine"
                raise ConfigError(f"cannot start or reach a Ray cluster {where} ({_first_line(error)}).") from None
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = int(workers) if workers else max(1, cluster_cpus // self.cpus_per_cell)
        self._remote = ray.remote(_ray_cell)
        self._refs: dict = {}

    @property
    def running(self) -> list[str]:
        """The names of the cells in flight."""
        return [spec.name for spec in self._refs.values()]

    def start(self, spec: CellSpec) -> None:
        """Submit the cell as a task with its resource request and thread environment."""
        Path(spec.folder).mkdir(parents=True, exist_ok=True)
        task = self._remote.options(num_cpus=spec.cpus, num_gpus=spec.gpus, max_retries=0,
                                    name=f"activelab-cell:{spec.name}",
                                    runtime_env={"env_vars": thread_environment(spec.threads)})
        self._refs[task.remote(asdict(spec))] = spec

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """The cells whose task ended within ``timeout`` seconds, with their outcomes."""
        if not self._refs:
            time.sleep(timeout)
            return []
        ray = self.ray
        ready, rest = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        results = []
        for ref in ready:
            spec = self._refs.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as error:  # the worker died, the task was cancelled, the node was lost
                outcome = {"status": "failed", "seconds": None, "rounds_run": 0,
                           "error": f"the cell's Ray task failed ({type(error).__name__}: {_first_line(error)})."}
            results.append((spec.name, outcome))
        return results

    def close(self) -> None:
        """Cancel the tasks in flight (they resume on the next sweep) and stop a Ray instance started here."""
        ray = self.ray
        for ref in list(self._refs):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False


def _ray_cell(spec: dict) -> dict:
    """The Ray task of one cell: run it with its output in the cell's log file."""
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a", encoding="utf-8") as stream:
        stream.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} cell {spec['name']} starts as a Ray task "
                     f"({spec['threads']} thread(s), pid {os.getpid()})\n")
        stream.flush()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger = logging.getLogger("activelab")
        saved = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                return execute_cell(spec)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved)


__all__ = ["CellSpec", "LocalExecutor", "RayExecutor", "execute_cell", "import_ray",
           "visible_gpus", "worker_main"]
