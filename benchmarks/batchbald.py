"""BatchBALD speed and memory: activelab against baal 2.1's ``BatchBALD`` on the same MC probabilities.

A batch of 100 from a 10,000-item pool with T=20 passes and C=10 classes (float32 softmax of random
logits: a shared item part plus per-pass noise). Both run in this one process on the same arrays
(baal's ``[N, C, T]`` layout is built outside the timing), repetitions alternate, and the script prints
the median seconds, the number of picks each made, seconds per pick, the peak extra memory of one call
(tracemalloc, which sees numpy's buffers but not torch's) and the ratios.

activelab keeps ``num_samples=1000`` joint configurations (its default). baal draws ``num_draw`` labels per
pass, so it scores ``T * num_draw`` configurations, and holds a float64 ``[N, T * num_draw, C]`` array and
its temporaries at once: its default ``num_draw=500`` (10,000 configurations) needs about 8 GB per such
array on the 10,000-item pool (4.5 GB peak measured on 2,000 items), more than the shared machine can
spare, so the script runs baal with ``--baal-draws 50``: the same 1,000 configurations as activelab.
baal also stops early once the best gain has stayed below 0.1 for more than ten picks, which with T=20
(a batch's joint mutual information is at most ``log 20``) happens after a few dozen picks, so compare
seconds per pick.

BLAS threads are fixed for both (``--blas-threads``, default 1): on the shared 2-core machine two OpenBLAS
threads made small matrix products 10-20x slower whenever the other core was busy.

Run: ``.venv/bin/python benchmarks/batchbald.py [--pool 10000] [--picks 100] [--repeats 3]``. Figures go
to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from activelab.strategies import registry

sys.path.insert(0, str(Path(__file__).parent))
from harness import peak_extra_bytes  # noqa: E402
from selection import random_probs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--picks", type=int, default=100)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=1000, help="activelab's joint configurations")
    parser.add_argument("--baal-draws", type=int, default=50, help="baal's num_draw (T * num_draw configurations)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from baal.active.heuristics import BatchBALD

    probs_T_N_C = random_probs((args.passes, args.pool, args.classes), seed=1)
    probs_N_C_T = np.ascontiguousarray(probs_T_N_C.transpose(1, 2, 0))
    batchbald = registry()["batchbald"]

    def activelab() -> int:
        selection = batchbald.select(args.picks, rng=np.random.default_rng(0), probs_T_N_C=probs_T_N_C,
                                     num_samples=args.num_samples)
        return selection.positions.size

    def baal() -> int:
        torch.manual_seed(0)                  # baal draws its configurations from torch's global generator
        scores = BatchBALD(num_samples=args.picks, num_draw=args.baal_draws).compute_score(probs_N_C_T)
        return int(np.count_nonzero(scores))

    calls = {"activelab batchbald": activelab, "baal BatchBALD": baal}
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"torch {torch.__version__}, BLAS threads {args.blas_threads}, load average "
          f"{', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    print(f"pool {args.pool:,}, T={args.passes}, C={args.classes}, {args.picks} picks, activelab num_samples="
          f"{args.num_samples}, baal num_draw={args.baal_draws} ({args.passes * args.baal_draws} configurations); "
          f"{args.repeats} alternating repetitions")
    times: dict[str, list[float]] = {name: [] for name in calls}
    picks: dict[str, int] = {}
    torch.set_num_threads(args.blas_threads)
    with threadpool_limits(args.blas_threads):
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                picks[name] = call()
                times[name].append(time.perf_counter() - start)
        memory = {name: peak_extra_bytes(call)[1] for name, call in calls.items()}
    base = statistics.median(times["activelab batchbald"]) / picks["activelab batchbald"]
    print("\nmethod: median s, picks, s per pick, per-pick time relative to activelab, peak extra memory")
    for name in calls:
        median = statistics.median(times[name])
        per_pick = median / picks[name]
        print(f"  {name:22s} {median:8.2f} s {picks[name]:5d} {per_pick:8.4f} s/pick {per_pick / base:6.2f}x  "
              f"{memory[name] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
