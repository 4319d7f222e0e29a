"""Selection speed and memory: activelab against baal, modAL and a bare numpy reference, same inputs.

Entropy and margin pick the top 1,000 of 1,000,000 x 10 float32 probabilities; BALD picks the top 1,000
of 1,000,000 items with T=20 passes (``probs_T_N_C``, float32). Every method runs in this one process on
the same arrays, repetitions alternate between methods, and the script prints medians, the peak extra
memory of one call (tracemalloc, which sees numpy's buffers) and the ratio to the numpy reference.

Run: ``.venv/bin/python benchmarks/selection.py [--scale 0.1] [--repeats 5]``. Figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from activelab.strategies import registry
from harness import peak_extra_bytes


def random_probs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Softmax of random logits in float32 (a shared item part plus per-pass noise for 3-D shapes)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape, dtype=np.float32) * np.float32(2.0)
    if len(shape) == 3:
        logits += rng.standard_normal(shape[1:], dtype=np.float32) * np.float32(2.0)
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


# --- bare numpy references: score, argpartition, sort the chosen n --------------------------------

def _top(scores: np.ndarray, n: int) -> np.ndarray:
    chosen = np.argpartition(scores, scores.size - n)[scores.size - n:]
    return chosen[np.argsort(-scores[chosen], kind="stable")]


def _entropy(probs: np.ndarray) -> np.ndarray:
    logs = np.log(probs, out=np.zeros_like(probs), where=probs > 0)
    return -np.einsum("...c,...c->...", probs, logs)


def numpy_entropy(probs_N_C: np.ndarray, n: int) -> np.ndarray:
    return _top(_entropy(probs_N_C), n)


def numpy_margin(probs_N_C: np.ndarray, n: int) -> np.ndarray:
    top = np.partition(probs_N_C, probs_N_C.shape[1] - 2, axis=1)
    return _top(-(top[:, -1] - top[:, -2]), n)


def numpy_bald(probs_T_N_C: np.ndarray, n: int, chunk: int = 8192) -> np.ndarray:
    n_pool = probs_T_N_C.shape[1]
    scores = np.empty(n_pool, dtype=np.float32)
    for start in range(0, n_pool, chunk):
        block = probs_T_N_C[:, start:start + chunk]
        scores[start:start + chunk] = _entropy(block.mean(axis=0)) - _entropy(block).mean(axis=0)
    return _top(scores, n)


# --- the libraries ---------------------------------------------------------------------------------

class StubEstimator:
    """What modAL's sampling functions need from a classifier: ``predict_proba`` (here, the precomputed array)."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def predict_proba(self, X, **kwargs) -> np.ndarray:
        return self.probs


def _indices(result) -> np.ndarray:
    """modAL's sampling functions return the chosen indices, or (indices, scores) in recent versions."""
    return np.asarray(result[0] if isinstance(result, tuple) else result)


def methods(n: int, probs_N_C: np.ndarray, probs_T_N_C: np.ndarray) -> dict[str, dict[str, object]]:
    from baal.active.heuristics import BALD, Entropy, Margin
    from modAL.uncertainty import entropy_sampling, margin_sampling

    strategies = registry()
    rng = lambda: np.random.default_rng(0)   # noqa: E731
    stub, pool = StubEstimator(probs_N_C), np.empty((probs_N_C.shape[0], 0), dtype=np.float32)
    probs_N_C_T = np.ascontiguousarray(probs_T_N_C.transpose(1, 2, 0))   # baal's layout, built outside timing
    table = {}
    for name, baal, modal, bare in (("entropy", Entropy(), entropy_sampling, numpy_entropy),
                                    ("margin", Margin(), margin_sampling, numpy_margin)):
        strategy = strategies[name]
        table[name] = {
            "numpy reference": lambda bare=bare: bare(probs_N_C, n),
            "activelab public": lambda s=strategy: s(n, rng=rng(), probs_N_C=probs_N_C).positions,
            "activelab internal": lambda s=strategy: s.select(n, rng=rng(), probs_N_C=probs_N_C).positions,
            "baal": lambda h=baal: h.get_ranks(probs_N_C)[0][:n],
            "modAL": lambda f=modal: _indices(f(stub, pool, n_instances=n)),
        }
    bald = strategies["bald"]
    table["bald"] = {
        "numpy reference": lambda: numpy_bald(probs_T_N_C, n),
        "activelab public": lambda: bald(n, rng=rng(), probs_T_N_C=probs_T_N_C).positions,
        "activelab internal": lambda: bald.select(n, rng=rng(), probs_T_N_C=probs_T_N_C).positions,
        "baal": lambda: BALD().get_ranks(probs_N_C_T)[0][:n],
    }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 1,000,000-item pools")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000, help="items selected")
    parser.add_argument("--passes", type=int, default=20, help="T for BALD")
    parser.add_argument("--only", nargs="*", default=None, help="entropy, margin and/or bald")
    args = parser.parse_args()

    n_pool = max(args.n + 1, int(1_000_000 * args.scale))
    probs_N_C = random_probs((n_pool, 10), seed=0)
    probs_T_N_C = random_probs((args.passes, n_pool, 10), seed=1)
    import torch
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"pool {n_pool:,} x 10 float32 ({probs_N_C.nbytes / 2**20:.0f} MiB); BALD {args.passes} x {n_pool:,} x 10 "
          f"({probs_T_N_C.nbytes / 2**20:.0f} MiB); top {args.n}; {args.repeats} alternating repetitions")
    table = methods(args.n, probs_N_C, probs_T_N_C)
    for task, calls in table.items():
        if args.only and task not in args.only:
            continue
        nbytes = (probs_T_N_C if task == "bald" else probs_N_C).nbytes
        reference = set(calls["numpy reference"]().tolist())
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["numpy reference"])
        print(f"\n{task}: median s, ratio to numpy, peak extra memory (x input), overlap with numpy's top {args.n}")
        for name, call in calls.items():
            median = statistics.median(times[name])
            extra = peak_extra_bytes(call)[1]
            overlap = len(reference & set(np.asarray(call()).tolist()))
            print(f"  {name:20s} {median:9.4f} s  {median / base:6.2f}x  {extra / 2**20:8.1f} MiB "
                  f"({extra / nbytes:5.2f}x)  {overlap}")


if __name__ == "__main__":
    main()
