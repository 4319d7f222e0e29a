"""CoreSet and BADGE speed and memory: activelab against bare numpy references, same inputs, one process.

Cases (pool x width, labelled items, budget):

* ``dense``: 10,000 x 512, 1,000 labelled, budget 1,000: activelab, the float32 incremental reference
  and a dense pairwise implementation (the full pool x pool squared-distance matrix in float64 from one
  matrix product, 800 MB, then greedy over its rows).
* ``coreset``: 100,000 x 512, 1,000 labelled, budget 1,000: activelab against the float32 reference.
* ``million``: 1,000,000 x 128, 1,000 labelled, budget 1,000: the same, one repetition.
* ``badge``: BADGE's k-means++ seeding over 100,000 x 1,280 gradient embeddings (10 classes x 128),
  budget 1,000, against a float32 k-means++ reference with the same draws.

The float32 reference is the bare incremental k-center greedy the issue names: squared norms once, the
labelled centres in row blocks, then one matrix-vector product, one ``minimum`` and one ``argmax`` per
pick. Pools are float32 Gaussian blobs (50 centres), generated in the script. Repetitions alternate
between methods; the script prints median seconds, the ratio to the reference, the peak extra memory of
one call (tracemalloc, which sees numpy's buffers and is measured in an untimed first run; the pool
itself is not counted) and how many picks equal the reference's.

Run: ``.venv/bin/python benchmarks/coreset.py [--cases dense coreset million badge] [--scale 0.1]
[--repeats 3] [--budget 1000]``. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from scipy.spatial.distance import cdist

from activelab.strategies import registry
from harness import peak_extra_bytes


def blobs(n_rows: int, width: int, seed: int, centres: int = 50) -> np.ndarray:
    """float32 Gaussian blobs, built in place without a float64 copy of the pool."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, width), dtype=np.float32) * np.float32(3.0)
    points = rng.standard_normal((n_rows, width), dtype=np.float32)
    for start in range(0, n_rows, 65536):
        block = points[start:start + 65536]
        block += means[rng.integers(centres, size=block.shape[0])]
    return points


# --- references --------------------------------------------------------------------------------------

def _labelled_min(pool: np.ndarray, sq: np.ndarray, labelled: np.ndarray, rows: int = 8192) -> np.ndarray:
    lsq = np.einsum("ij,ij->i", labelled, labelled)
    nearest = np.empty(pool.shape[0], dtype=pool.dtype)
    for start in range(0, pool.shape[0], rows):
        block = sq[start:start + rows, None] - 2.0 * (pool[start:start + rows] @ labelled.T) + lsq
        nearest[start:start + rows] = block.min(axis=1)
    return nearest


def reference_coreset(pool: np.ndarray, labelled: np.ndarray, n: int) -> np.ndarray:
    """Bare float32 incremental k-center greedy: one matrix-vector product per pick."""
    sq = np.einsum("ij,ij->i", pool, pool)
    nearest = _labelled_min(pool, sq, labelled)
    chosen = np.empty(n, np.int64)
    for step in range(n):
        pick = int(np.argmax(nearest))
        chosen[step] = pick
        np.minimum(nearest, sq - 2.0 * (pool @ pool[pick]) + sq[pick], out=nearest)
        nearest[pick] = -1.0
    return chosen


def dense_coreset(pool: np.ndarray, labelled: np.ndarray, n: int) -> np.ndarray:
    """k-center greedy over the full pool x pool squared-distance matrix in float64 (BLAS), as dense code does."""
    pool, labelled = pool.astype(np.float64), labelled.astype(np.float64)
    sq, lsq = np.einsum("ij,ij->i", pool, pool), np.einsum("ij,ij->i", labelled, labelled)
    nearest = (sq[:, None] - 2.0 * (pool @ labelled.T) + lsq).min(axis=1)
    pairwise = pool @ pool.T
    pairwise *= -2.0
    pairwise += sq[:, None]
    pairwise += sq
    chosen = np.empty(n, np.int64)
    for step in range(n):
        pick = int(np.argmax(nearest))
        chosen[step] = pick
        np.minimum(nearest, pairwise[pick], out=nearest)
        nearest[pick] = -1.0
    return chosen


def reference_kmeanspp(grads: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Bare float32 k-means++ seeding from the largest norm, one uniform draw per centre (as activelab)."""
    rng = np.random.default_rng(seed)
    sq = np.einsum("ij,ij->i", grads, grads)
    nearest = np.full(grads.shape[0], np.inf, dtype=grads.dtype)
    pick = int(np.argmax(sq))
    chosen = np.empty(n, np.int64)
    for step in range(n):
        if step:
            cdf = np.cumsum(nearest, dtype=np.float64)
            pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        chosen[step] = pick
        np.minimum(nearest, np.maximum(sq - 2.0 * (grads @ grads[pick]) + sq[pick], 0.0), out=nearest)
        nearest[pick] = 0.0
    return chosen


# --- harness -----------------------------------------------------------------------------------------

def compare(title: str, calls: dict[str, object], repeats: int, nbytes: int) -> None:
    """One untimed run of each call under tracemalloc, then ``repeats`` alternating timed runs; print the table."""
    extra = {name: peak_extra_bytes(call)[1] for name, call in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    picks: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            picks[name] = np.asarray(call())
            times[name].append(time.perf_counter() - start)
    reference = next(iter(calls))
    base = statistics.median(times[reference])
    print(f"\n{title} (pool {nbytes / 2**20:.0f} MiB): median s, ratio to {reference}, peak extra memory, "
          f"picks equal to {reference}'s (same position in the order)", flush=True)
    for name in calls:
        median = statistics.median(times[name])
        same = int((picks[name] == picks[reference]).sum())
        print(f"  {name:22s} {median:9.2f} s  {median / base:6.2f}x  {extra[name] / 2**20:8.1f} MiB  "
              f"{same}/{picks[reference].size}", flush=True)


def coreset_calls(pool: np.ndarray, labelled: np.ndarray, n: int, dense: bool) -> dict[str, object]:
    coreset = registry()["coreset"]
    rng = lambda: np.random.default_rng(0)   # noqa: E731
    calls = {"float32 reference": lambda: reference_coreset(pool, labelled, n),
             "activelab public": lambda: coreset(n, rng=rng(), emb_N_D=pool, labelled_emb_M_D=labelled).positions,
             "activelab internal": lambda: coreset.select(n, rng=rng(), emb_N_D=pool,
                                                          labelled_emb_M_D=labelled).positions}
    if dense:
        calls["dense pairwise"] = lambda: dense_coreset(pool, labelled, n)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["dense", "coreset", "million", "badge"])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each pool size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--labelled", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; "
          f"budget {args.budget}, {args.labelled} labelled, {args.repeats} alternating repetitions")
    size = lambda rows: max(args.budget + 1, int(rows * args.scale))   # noqa: E731
    labelled = lambda width: blobs(args.labelled, width, seed=1)      # noqa: E731
    if "dense" in args.cases:
        pool = blobs(size(10_000), 512, seed=0)
        compare(f"CoreSet {pool.shape[0]:,} x 512", coreset_calls(pool, labelled(512), args.budget, dense=True),
                args.repeats, pool.nbytes)
    if "coreset" in args.cases:
        pool = blobs(size(100_000), 512, seed=0)
        compare(f"CoreSet {pool.shape[0]:,} x 512", coreset_calls(pool, labelled(512), args.budget, dense=False),
                args.repeats, pool.nbytes)
    if "million" in args.cases:
        pool = blobs(size(1_000_000), 128, seed=0)
        compare(f"CoreSet {pool.shape[0]:,} x 128", coreset_calls(pool, labelled(128), args.budget, dense=False),
                1, pool.nbytes)
    if "badge" in args.cases:
        grads = blobs(size(100_000), 1280, seed=2)
        badge = registry()["badge"]
        compare(f"BADGE k-means++ {grads.shape[0]:,} x 1,280", {
            "float32 reference": lambda: reference_kmeanspp(grads, args.budget, seed=0),
            "activelab public": lambda: badge(args.budget, rng=np.random.default_rng(0), grad_emb_N_D=grads).positions,
            "activelab internal": lambda: badge.select(args.budget, rng=np.random.default_rng(0),
                                                       grad_emb_N_D=grads).positions,
        }, args.repeats, grads.nbytes)


if __name__ == "__main__":
    main()
