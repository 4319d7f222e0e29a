"""Thread counts chosen on purpose: torch and the BLAS libraries sized to the cores a process may use.

Numeric libraries start one thread per core of the machine. Two things make that wrong: a container or
a CPU affinity mask may allow far fewer cores than the machine has (64 threads on a 2-CPU quota), and
several processes of one job (sweep cells, Ray actors) each starting a thread per core ask for more
threads than there are cores. Either way OpenMP threads spin-wait for each other and the same kernels
run 5-10x slower (measured on the project's 2-core machines). So every process activelab starts gets
``usable_cpus() // workers`` threads, fixed before torch is imported where it can be, and a run in the
user's own process caps torch at the usable cores unless the user chose a number (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables that fix the thread pools of OpenMP, MKL, OpenBLAS, Accelerate and numexpr.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


def usable_cpus() -> int:
    """The cores this process may run on: its affinity mask, lowered to the cgroup's CPU quota if any."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, quota) if quota is not None else cpus)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs of the cgroup's quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, quota // period) if quota > 0 and period > 0 else None


def threads_per_worker(cpus: int, workers: int) -> int:
    """Threads for each of ``workers`` processes sharing ``cpus`` cores (at least 1)."""
    return max(1, int(cpus) // max(1, int(workers)))


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that limit every numeric library to ``threads`` threads."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def cap_torch_threads() -> int:
    """In the user's own process: at most ``usable_cpus()`` torch threads, unless ``OMP_NUM_THREADS`` says
    how many; returns torch's thread count."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())
    return torch.get_num_threads()
