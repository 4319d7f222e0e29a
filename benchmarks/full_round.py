"""(4) One full active-learning round on Fashion-MNIST through the public Run API, and its pool pass again.

For each strategy (default: margin, and BALD with T = 20 MC-dropout samples) a run is created in a
temporary folder with 1,000 initial labels and the whole training split as the pool (``pool_size=None``:
60,000 - 1,000 validation - 1,000 labelled = 58,000 items), and ``run.query()`` trains the small CNN,
evaluates it on the official 10,000 test images, scores the pool and selects 100 items. The seconds come
from the round's record (train / evaluate / score / select); the goal is under 60 s each on 2 cores.

Then the round's saved model scores the same pool again in this process, alternating repetitions: the
Run's in-memory pass (:func:`activelab.inference.pool_outputs`) against :func:`activelab.pool_scoring.score_pool`
writing memory-mapped files chunk by chunk, with medians, the ratio, and a check that both give the same arrays
and the strategy picks the same items from them.

Run from the repository root::

    .venv/bin/python benchmarks/full_round.py                       # margin and bald, 2 repetitions
    .venv/bin/python benchmarks/full_round.py --strategies margin --reps 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from activelab.inference import POOL_OUTPUTS, pool_outputs
from activelab.models import build_model
from activelab.pool_scoring import discard_cache, score_pool
from activelab.run import SCORE_BATCH, Run


def one_round(folder: Path, strategy: str, mc_samples: int) -> tuple[Run, dict]:
    """Create the run and query its first batch; the round's seconds per step."""
    run = Run.create(folder / strategy, data="fashion-mnist", model="cnn", strategy=strategy, seed=0,
                     n_train_images=1000, pool_size=None, al_samples_per_iter=100, mc_samples=mc_samples,
                     progress=False)
    started = time.perf_counter()
    batch = run.query()
    wall = time.perf_counter() - started
    record = run.rounds[-1]
    return run, {"train": record.seconds_train, "evaluate": record.seconds_evaluate, "score": record.seconds_score,
                 "select": record.seconds_select, "query wall": wall, "ids": list(batch.ids), "epochs": record.epochs,
                 "test accuracy": record.test_accuracy}


def rescore(run: Run, folder: Path, mc_samples: int, reps: int) -> dict:
    """The round's pool pass again: in memory vs memory-mapped chunks, alternating; medians and selections."""
    dataset, state, config = run.dataset, run.state, run.config
    model = build_model(config.model_class, dataset.input_shape, dataset.num_classes)
    model.load_state_dict(torch.load(run.run_dir / "models" / "round_000.pt", weights_only=True)["model"])
    model.eval()
    pool = state.pool_ids
    wanted = {need for need in run.strategy.needs if need in POOL_OUTPUTS}
    options = dict(batch_size=SCORE_BATCH, mc_samples=mc_samples, seed=1)
    cache = folder / "cache"
    times = {"in memory": [], "memory-mapped": []}
    outputs = {}
    for _ in range(reps):
        for path in times:
            discard_cache(cache)
            started = time.perf_counter()
            if path == "in memory":
                outputs[path] = pool_outputs(model, dataset, pool, wanted, **options)
            else:
                outputs[path] = score_pool(model, dataset, pool, wanted, cache_dir=cache, **options)
            times[path].append(time.perf_counter() - started)
    picks = {path: pool[run.strategy(100, rng=np.random.default_rng(0), n_pool=pool.size, **arrays).positions]
             for path, arrays in outputs.items()}
    same_arrays = all(np.array_equal(outputs["in memory"][name], outputs["memory-mapped"][name]) for name in wanted)
    discard_cache(cache)
    return {"medians": {path: statistics.median(values) for path, values in times.items()}, "items": pool.size,
            "same arrays": same_arrays,
            "same picks": bool(np.array_equal(picks["in memory"], picks["memory-mapped"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["margin", "bald"])
    parser.add_argument("--mc-samples", type=int, default=20, help="T for the MC-dropout strategies")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each pool pass")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"{'strategy':>9} {'train s':>8} {'epochs':>6} {'evaluate s':>10} {'score s':>8} {'select s':>9} "
          f"{'query s':>8} {'test acc':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        for strategy in args.strategies:
            folder = Path(temporary)
            run, seconds = one_round(folder, strategy, args.mc_samples)
            print(f"{strategy:>9} {seconds['train']:>8.1f} {seconds['epochs']:>6} {seconds['evaluate']:>10.1f} "
                  f"{seconds['score']:>8.1f} {seconds['select']:>9.3f} {seconds['query wall']:>8.1f} "
                  f"{seconds['test accuracy']:>8.3f}", flush=True)
            rows.append((strategy, run, seconds))
        print(f"\npool pass of the round's model again, median of {args.reps} (alternating):")
        print(f"{'strategy':>9} {'items':>7} {'in memory s':>11} {'mem-mapped s':>12} {'ratio':>6} "
              f"{'images/s':>9} {'same arrays':>11} {'same picks':>10}")
        for strategy, run, seconds in rows:
            result = rescore(run, Path(temporary) / f"{strategy}-rescore", args.mc_samples, args.reps)
            memory, mapped = result["medians"]["in memory"], result["medians"]["memory-mapped"]
            print(f"{strategy:>9} {result['items']:>7,} {memory:>11.1f} {mapped:>12.1f} {mapped / memory:>6.2f} "
                  f"{result['items'] / memory:>9,.0f} {str(result['same arrays']):>11} {str(result['same picks']):>10}",
                  flush=True)


if __name__ == "__main__":
    main()
