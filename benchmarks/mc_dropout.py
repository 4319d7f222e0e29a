"""MC-dropout scoring speed: activelab against baal's two MC wrappers, same weights, same images.

The small Gal et al. CNN (``build_model("cnn", (1, 28, 28), 10)``, seeded random weights, the same for
everyone) scores Fashion-MNIST images with T=20 dropout passes:

* activelab ``pool_outputs(..., {"probs_T_N_C"})``: the trunk once per image and the head's T networks
  stacked (one matrix product per layer, ``StackedDropoutHead``);
* activelab with the head run T times through hooks (the path every other head takes, and what
  activelab did before the stacked head);
* baal 2.1 ``ModelWrapper(MCDropoutModule(model))`` with its default ``replicate_in_memory=True``: the
  batch copied T times and the whole network run on the copies;
* baal ``ModelWrapper(MCCachingModule(MCDropoutModule(model)), replicate_in_memory=False)``: the network
  called T times, convolution and linear outputs reused while their input is unchanged.

All four read the same in-memory float32 tensor in batches of the same size; repetitions alternate
between the methods. The script prints the median seconds, images per second, the peak extra resident
memory of one call (sampled every 2 ms from /proc/self/statm) and the ratios to activelab. baal returns
logits, activelab probabilities (its softmax is inside the timing). It also checks that the stacked
head gives the probabilities and the BALD top-100 of the hooked passes.

Run: ``.venv/bin/python benchmarks/mc_dropout.py [--pool 10000] [--repeats 3]`` (``--pool 60000`` for the
whole training split). Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import threading
import time
from unittest import mock

import numpy as np
import torch
from torch.utils.data import TensorDataset

from activelab.data.base import ArrayDataset
from activelab.data.sources import get_source
from activelab.inference import pool_outputs
from activelab.mcdropout import StackedDropoutHead
from activelab.models import build_model
from activelab.strategies import registry

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_extra_resident(call) -> tuple[object, int]:
    """Run ``call`` and return its result and the largest resident-memory growth seen while it ran."""
    before, peak, running = resident_bytes(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = call()
    finally:
        running[0] = False
        sampler.join()
    return result, max(peak[0], resident_bytes()) - before


def methods(model: torch.nn.Module, images: torch.Tensor, passes: int, batch_size: int) -> dict[str, object]:
    from baal.bayesian.caching_utils import MCCachingModule
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    pool = ArrayDataset("pool", images.numpy(), np.zeros(len(images), dtype=np.int64), tuple("0123456789"))
    positions = np.arange(len(images))
    labelled = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))

    def activelab() -> np.ndarray:
        return pool_outputs(model, pool, positions, {"probs_T_N_C"}, mc_samples=passes, batch_size=batch_size,
                            seed=0)["probs_T_N_C"]

    def activelab_hooked() -> np.ndarray:
        with mock.patch.object(StackedDropoutHead, "supports", return_value=False):
            return activelab()

    default = ModelWrapper(MCDropoutModule(copy.deepcopy(model)),
                           TrainingArgs(batch_size=batch_size, use_cuda=False, workers=0))
    caching = ModelWrapper(MCCachingModule(MCDropoutModule(copy.deepcopy(model))),
                           TrainingArgs(batch_size=batch_size, use_cuda=False, workers=0, replicate_in_memory=False))
    return {
        "activelab (stacked head)": activelab,
        "activelab (T hooked head passes)": activelab_hooked,
        "baal MCDropoutModule (default)": lambda: default.predict_on_dataset(labelled, passes, verbose=False),
        "baal MCCachingModule": lambda: caching.predict_on_dataset(labelled, passes, verbose=False),
    }


def check_stacked_equals_hooked(calls: dict[str, object]) -> str:
    stacked, hooked = calls["activelab (stacked head)"](), calls["activelab (T hooked head passes)"]()
    bald = registry()["bald"]
    top = [bald(100, rng=np.random.default_rng(0), probs_T_N_C=probs).positions for probs in (stacked, hooked)]
    return (f"stacked vs hooked: max |probability difference| {np.abs(stacked - hooked).max():.2e}, "
            f"same BALD top-100 in the same order: {np.array_equal(*top)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=10_000, help="Fashion-MNIST training images scored")
    parser.add_argument("--passes", type=int, default=20, help="T")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dataset = get_source("fashion-mnist").load()
    images = dataset.load(np.arange(args.pool))
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10).eval()
    calls = methods(model, images, args.passes, args.batch_size)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"pool {args.pool:,} Fashion-MNIST images, small CNN (random weights, seed 0), T={args.passes}, "
          f"batches of {args.batch_size}; {args.repeats} alternating repetitions")
    print(check_stacked_equals_hooked(calls))

    times: dict[str, list[float]] = {name: [] for name in calls}
    memory: dict[str, int] = {}
    for repeat in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            if repeat == 0:
                _, memory[name] = peak_extra_resident(call)
            else:
                call()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["activelab (stacked head)"])
    print("\nmethod: median s, images/s, time relative to activelab (stacked), peak extra resident memory")
    for name in calls:
        median = statistics.median(times[name])
        print(f"  {name:34s} {median:8.2f} s {args.pool / median:9,.0f} img/s  {median / base:6.2f}x  "
              f"{memory[name] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
