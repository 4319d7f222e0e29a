"""One active-learning round on the full 60,000-image Fashion-MNIST pool with the small CNN.

Prints seconds for train / evaluate / score / select with 1,000 labels (the official 10,000-image test
split, 1,000 validation images). Run: ``.venv/bin/python benchmarks/round_time.py [--strategy margin]``.
Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from activelab.data.sources import get_source
from activelab.data.state import LabelState
from activelab.inference import POOL_OUTPUTS, pool_outputs
from activelab.models import build_model
from activelab.strategies import get_strategy
from activelab.training import TrainSettings, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="items selected")
    parser.add_argument("--max-epochs", type=int, default=10)
    args = parser.parse_args()

    dataset = get_source("fashion-mnist").load()
    state = LabelState.create(dataset.labels, seed=0, predefined_test=dataset.predefined_test, n_val=1000)
    initial = state.acquire_initial_ids(args.labels)
    state.add(initial, dataset.labels[initial], 0)
    strategy = get_strategy(args.strategy)
    torch.manual_seed(0)
    model = build_model("cnn", dataset.input_shape, dataset.num_classes)
    settings = TrainSettings(max_epochs=args.max_epochs, patience=3, progress=False)

    fitted = fit(model, dataset, state.labelled_ids, state.labelled_labels, state.val_ids, settings, seed=0)
    start = time.perf_counter()
    evaluate(model, dataset, state.test_ids, settings)
    evaluated = time.perf_counter()
    pool = state.pool_ids
    wanted = {need for need in strategy.needs if need in POOL_OUTPUTS}
    inputs = pool_outputs(model, dataset, pool, wanted, batch_size=512) if wanted else {}
    scored = time.perf_counter()
    strategy(args.batch, rng=np.random.default_rng(0), n_pool=pool.size, **inputs)
    selected = time.perf_counter()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"pool {pool.size} items, {args.labels} labels, strategy {strategy.name}, select {args.batch}")
    print(f"train    {fitted.seconds:8.2f} s  ({fitted.epochs} epochs, best val acc {fitted.best_val_accuracy:.3f})")
    print(f"evaluate {evaluated - start:8.2f} s  (10,000 test images)")
    print(f"score    {scored - evaluated:8.2f} s  ({pool.size / (scored - evaluated):,.0f} images/s)")
    print(f"select   {selected - scored:8.4f} s")


if __name__ == "__main__":
    main()
