"""(5) One round on a synthetic 1,000,000-image HDF5 pool: seconds and peak memory, in memory vs memory-mapped.

Writes ``X`` (28x28 uint8 images, random pixels from a seeded generator) and ``y`` (labels 0..9) to an
HDF5 file in the ``arrays`` source's format, chunked by 1,024 images. Then, per strategy (default margin,
and BALD with T = 20), two fresh processes:

``run``
    ``Run.create(data="arrays", ...)`` with 1,000 initial labels, the whole rest as the pool, and
    ``run.query()``: train, evaluate, score the pool with the Run's in-memory pass, select 100.
``mapped``
    the same run's model (trained by ``run.fit()``, or the one the ``run`` process trained) scores the
    same pool with :func:`activelab.pool_scoring.score_pool` (memory-mapped ``.npy`` files in a
    temporary folder, 8,192 items a chunk), and the strategy selects 100 from the memory maps.

Each process reports its resident memory before the pool pass and its peaks: ``VmHWM`` (all resident
pages, including the pages of memory-mapped files it touched, which the kernel can drop at any time) and
the peak of ``RssAnon`` sampled every 50 ms (the process's own memory, which it cannot drop).

Run from the repository root (about 30 minutes on 2 busy cores at the full size)::

    .venv/bin/python benchmarks/big_pool.py
    .venv/bin/python benchmarks/big_pool.py --size 100000 --strategies margin
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from harness import write_pool


class MemoryWatch:
    """Samples this process's ``RssAnon`` every ``interval`` seconds in a thread and keeps the largest."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_anon = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, status_mb("RssAnon"))
            self._stop.wait(self.interval)


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def open_run(job: dict):
    """The strategy's run on the pool file: 1,000 initial labels, the rest of the file as the pool."""
    from activelab.run import Run

    return Run.create(Path(job["folder"]) / f"run-{job['strategy']}", data="arrays", data_dir=job["pool"],
                      strategy=job["strategy"], seed=0, n_train_images=1000, pool_size=None, n_test=2000,
                      al_samples_per_iter=100, mc_samples=job["mc_samples"], progress=False)


def run_round(job: dict) -> dict:
    """The ``run`` process: a whole round through the Run API (its scoring in memory)."""
    run = open_run(job)
    before = status_mb("VmRSS")
    with MemoryWatch() as watch:
        run.query()
    record = run.rounds[-1]
    return {"items": int(run.state.pool_ids.size), "rss_before": before, "peak_rss": status_mb("VmHWM"),
            "peak_anon": watch.peak_anon, "train": record.seconds_train, "score": record.seconds_score,
            "select": record.seconds_select}


def mapped_round(job: dict) -> dict:
    """The ``mapped`` process: the Run trains (or reuses the ``run`` process's model), then the model scores
    the pool into memory maps and the strategy selects from them."""
    import torch

    from activelab.inference import POOL_OUTPUTS
    from activelab.models import build_model
    from activelab.pool_scoring import score_pool

    run = open_run(job)
    record = run.fit()
    dataset, pool, strategy = run.dataset, run.state.pool_ids, run.strategy
    model = build_model("cnn", dataset.input_shape, dataset.num_classes)
    model.load_state_dict(torch.load(run.run_dir / "models" / f"round_{record.round:03d}.pt", weights_only=True)["model"])
    wanted = {need for need in strategy.needs if need in POOL_OUTPUTS}
    before = status_mb("VmRSS")
    with MemoryWatch() as watch:
        started = time.perf_counter()
        outputs = score_pool(model.eval(), dataset, pool, wanted, cache_dir=Path(job["folder"]) / f"cache-{job['strategy']}",
                             batch_size=256, mc_samples=job["mc_samples"], seed=0)
        scored = time.perf_counter()
        strategy(100, rng=np.random.default_rng(0), n_pool=pool.size, **outputs)
        selected = time.perf_counter()
    return {"items": int(pool.size), "rss_before": before, "peak_rss": status_mb("VmHWM"),
            "peak_anon": watch.peak_anon, "train": record.seconds_train, "score": scored - started,
            "select": selected - scored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="images in the synthetic pool file")
    parser.add_argument("--strategies", nargs="+", default=["margin", "bald"])
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--paths", nargs="+", default=["run", "mapped"], choices=["run", "mapped"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        job = json.loads(args.child)
        print(json.dumps(run_round(job) if job["kind"] == "run" else mapped_round(job)))
        return
    with tempfile.TemporaryDirectory() as folder:
        pool = Path(folder) / "pool.h5"
        started = time.perf_counter()
        write_pool(pool, args.size)
        print(f"wrote {args.size:,} images to {pool.stat().st_size / 2**20:,.0f} MiB of HDF5 in "
              f"{time.perf_counter() - started:.0f} s")
        print(f"{'strategy':>9} {'path':>7} {'pool':>9} {'train s':>8} {'score s':>8} {'images/s':>9} {'select s':>9} "
              f"{'RSS before':>10} {'peak RSS':>9} {'peak anon':>9}  (MiB)")
        for strategy in args.strategies:
            for kind in args.paths:
                job = {"kind": kind, "strategy": strategy, "pool": str(pool), "folder": folder,
                       "mc_samples": args.mc_samples}
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                                      text=True)
                if done.returncode != 0:
                    print(f"{strategy:>9} {kind:>7} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                train = f"{result['train']:.1f}"
                print(f"{strategy:>9} {kind:>7} {result['items']:>9,} {train:>8} {result['score']:>8.1f} "
                      f"{result['items'] / result['score']:>9,.0f} {result['select']:>9.2f} {result['rss_before']:>10,.0f} "
                      f"{result['peak_rss']:>9,.0f} {result['peak_anon']:>9,.0f}", flush=True)


if __name__ == "__main__":
    main()
