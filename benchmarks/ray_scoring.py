"""(6) Pool scoring throughput: the model's own forward pass, the data path, memory maps and Ray Data workers.

On the Fashion-MNIST training images (60,000, ``--repeat`` times over) with the small CNN, in one
process and alternating repetitions, images per second of:

``forward``
    the model alone on in-memory tensors: the pool decoded and normalised once up front, then
    ``softmax(model(x))`` over batches of 256 (what scoring costs without a data path);
``load only``
    the data path alone: :func:`activelab.data.loading.make_loader` over the pool, no model;
``pool_outputs``
    :func:`activelab.inference.pool_outputs`, the Run's pass (data path + model + outputs to numpy);
``mapped``
    :func:`activelab.pool_scoring.score_pool` into memory-mapped files, chunk by chunk;
``ray N``
    ``score_pool(executor="ray", workers=N)`` on a local Ray instance (started once, before timing;
    each call starts its N actors, which is part of every round's cost, so it is in the time).

The ratio column is each against ``pool_outputs``; the data path's share is ``pool_outputs / forward``
(goal: at most 1.2). ``--wanted probs_T_N_C`` scores T = 20 MC-dropout samples instead of probabilities.

Run from the repository root::

    .venv/bin/python benchmarks/ray_scoring.py                    # probabilities, 60,000 items, 2 repetitions
    .venv/bin/python benchmarks/ray_scoring.py --wanted probs_T_N_C --reps 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from activelab.data.loading import make_loader
from activelab.data.sources import get_source
from activelab.inference import pool_outputs
from activelab.models import build_model
from activelab.pool_scoring import ModelRecipe, discard_cache, score_pool

BATCH = 256


def forward_only(model, images: torch.Tensor) -> np.ndarray:
    """Probabilities of the model on tensors already in memory, batch by batch."""
    with torch.no_grad():
        return np.concatenate([torch.softmax(model(images[start:start + BATCH]), 1).numpy()
                               for start in range(0, images.shape[0], BATCH)])


def load_only(dataset, positions: np.ndarray) -> int:
    """Every batch of the scoring loader, decoded and normalised, and nothing else."""
    return sum(batch.shape[0] for batch in make_loader(dataset, positions, batch_size=BATCH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="passes over the 60,000 training images")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions")
    parser.add_argument("--wanted", default="probs_N_C", choices=["probs_N_C", "probs_T_N_C"])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Ray worker counts")
    args = parser.parse_args()

    import ray

    dataset = get_source("fashion-mnist").load(download_missing=False)
    positions = np.tile(np.arange(60_000), args.repeat)
    torch.manual_seed(0)
    model = build_model("cnn", dataset.input_shape, dataset.num_classes).eval()
    recipe = ModelRecipe(dataset.input_shape, dataset.num_classes, name="cnn")
    options = dict(batch_size=BATCH, mc_samples=20, seed=0)
    wanted = {args.wanted}
    images = dataset.load(positions) if args.wanted == "probs_N_C" else None
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"{positions.size:,} items, {args.wanted}, torch {torch.get_num_threads()} threads, "
          f"Ray with {int(ray.cluster_resources()['CPU'])} CPUs, load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache"
        competitors = {"pool_outputs": lambda: pool_outputs(model, dataset, positions, wanted, **options),
                       "load only": lambda: load_only(dataset, positions),
                       "mapped": lambda: score_pool(model, dataset, positions, wanted, cache_dir=cache, **options)}
        if images is not None:
            competitors["forward"] = lambda: forward_only(model, images)
        for count in args.workers:
            competitors[f"ray {count}"] = (lambda count=count: score_pool(
                model, dataset, positions, wanted, executor="ray", workers=count, recipe=recipe, **options))
        seconds = {name: [] for name in competitors}
        results = {}
        pool_outputs(model, dataset, positions[:2048], wanted, **options)  # warm-up: allocator, kernels, pages
        # the in-process paths alternate among themselves, then the Ray paths among themselves: Ray's actors
        # wind down for a while after a call and would slow whatever ran next
        for group in ([name for name in competitors if not name.startswith("ray")],
                      [name for name in competitors if name.startswith("ray")]):
            for _ in range(args.reps):
                for name in group:
                    discard_cache(cache)
                    started = time.perf_counter()
                    results[name] = competitors[name]()
                    seconds[name].append(time.perf_counter() - started)
        reference = results["pool_outputs"][args.wanted]
        base = statistics.median(seconds["pool_outputs"])
        print(f"{'path':>13} {'median s':>9} {'images/s':>9} {'vs pool_outputs':>15} {'max |diff|':>11}")
        for name, values in seconds.items():
            median = statistics.median(values)
            outcome = results[name]
            array = outcome if isinstance(outcome, np.ndarray) else outcome.get(args.wanted) if isinstance(outcome, dict) else None
            difference = "-" if array is None else f"{float(np.max(np.abs(np.asarray(array) - reference))):.1e}"
            print(f"{name:>13} {median:>9.2f} {positions.size / median:>9,.0f} {median / base:>15.2f} {difference:>11}")
        if "forward" in seconds:
            share = base / statistics.median(seconds["forward"])
            print(f"data path: pool_outputs takes {share:.2f}x the forward pass on in-memory tensors (goal <= 1.20)")
        discard_cache(cache)
    ray.shutdown()


if __name__ == "__main__":
    main()
