"""Small labelled budgets: does training enough per round let BALD deliver its published gain?

Protocol (Gal et al. 2017 style): Fashion-MNIST, the small CNN, 20 class-balanced initial labels, 10 more
per round, a 10,000-image pool, 100 validation and 2,000 test images, several paired seeds. Two training
settings are compared:

* ``before``: the earlier defaults, up to 50 epochs, early stopping on validation accuracy (patience 5);
  20 labels are one optimiser step per epoch;
* ``after``: the same plus ``--min-steps`` optimiser steps per round and early stopping on the validation
  loss, which is smooth where the accuracy of 100 validation images moves in steps of 1 %.

For every run it prints the area under the learning curve (mean test accuracy over the rounds, in %), the
final accuracy and the labels needed to reach 80 % test accuracy, then the paired difference of each
strategy from random per setting. Each cell is an ordinary run in ``--out`` (resumable), so an interrupted
benchmark continues where it stopped. Results: docs/small-budget.md.

Run: ``.venv/bin/python benchmarks/small_budget.py --workers 2`` (about 40 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SETTINGS = {
    "before": dict(max_epochs=50, patience=5, monitor="val_acc", min_steps=0),
    "after": dict(max_epochs=50, patience=5, monitor="val_loss", min_steps=300),
}
PROTOCOL = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=20, initial="balanced",
                al_samples_per_iter=10, n_val=100, n_test=2000, pool_size=10000, mc_samples=10, progress=False)
TARGET = 0.80


def run_cell(cell: tuple[str, str, int, int, str]) -> dict:
    """One run of the protocol; returns its learning curve."""
    import torch

    torch.set_num_threads(1)
    from activelab.config import RunConfig
    from activelab.loop import run_experiment

    setting, strategy, seed, al_iter, out = cell
    config = RunConfig(**PROTOCOL, **SETTINGS[setting], sampling_method=strategy, seed=seed, al_iter=al_iter,
                       out=out, run_name=f"{setting}-{strategy}-seed{seed}")
    state = run_experiment(config)
    return {"setting": setting, "strategy": strategy, "seed": seed,
            "labels": [record.n_labelled for record in state.rounds],
            "accuracy": [record.test_accuracy for record in state.rounds],
            "steps": [record.steps for record in state.rounds],
            "seconds": sum(record.seconds for record in state.rounds)}


def labels_to_target(curve: dict) -> int | None:
    reached = [labels for labels, accuracy in zip(curve["labels"], curve["accuracy"]) if accuracy >= TARGET]
    return reached[0] if reached else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/small-budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-labels", type=int, default=200)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--cells", default="before:random,before:bald,after:random,after:margin,after:bald,"
                                           "after:variation_ratios")
    args = parser.parse_args()
    al_iter = (args.max_labels - PROTOCOL["n_train_images"]) // PROTOCOL["al_samples_per_iter"]
    pairs = [tuple(item.split(":")) for item in args.cells.split(",")]
    cells = [(setting, strategy, seed, al_iter, args.out)
             for (setting, strategy), seed in itertools.product(pairs, range(args.seeds))]
    with ProcessPoolExecutor(args.workers) as pool:
        curves = list(pool.map(run_cell, cells))
    print(f"{'setting':<7} {'strategy':<16} {'seed':>4} {'AUC %':>6} {'final %':>7} {'to 80 %':>7} "
          f"{'steps/round':>11} {'minutes':>7}")
    auc = {}
    for curve in curves:
        auc[curve["setting"], curve["strategy"], curve["seed"]] = 100 * float(np.mean(curve["accuracy"]))
        reached = labels_to_target(curve)
        print(f"{curve['setting']:<7} {curve['strategy']:<16} {curve['seed']:>4} "
              f"{auc[curve['setting'], curve['strategy'], curve['seed']]:>6.1f} {100 * curve['accuracy'][-1]:>7.1f} "
              f"{reached if reached else '-':>7} {np.mean(curve['steps']):>11.0f} {curve['seconds'] / 60:>7.1f}")
    print("\npaired AUC difference from random (mean over seeds, min..max):")
    for setting, strategy in pairs:
        if strategy == "random" or (setting, "random") not in pairs:
            continue
        differences = [auc[setting, strategy, seed] - auc[setting, "random", seed] for seed in range(args.seeds)]
        print(f"  {setting:<7} {strategy:<16} {np.mean(differences):+6.1f}  "
              f"({min(differences):+.1f} .. {max(differences):+.1f})")
    print(f"\nrandom's AUC, after - before: "
          f"{np.mean([auc['after', 'random', s] - auc['before', 'random', s] for s in range(args.seeds)]):+.1f}"
          if ("before", "random") in pairs and ("after", "random") in pairs else "")


if __name__ == "__main__":
    main()
