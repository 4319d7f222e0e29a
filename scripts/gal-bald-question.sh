#!/usr/bin/env bash
# Why does top-k BALD lose to random on Fashion-MNIST when Gal et al. 2017 found it far ahead on MNIST?
# docs/results.md answers with two sweeps: Gal et al.'s experiment on 5,000 real MNIST images, and BALD on
# Fashion-MNIST scoring a fresh random 2,000 of the pool each round, as Gal et al.'s code did. Then the
# reports with diagnostics and the tables docs/results.md shows. About 1.5 hours on 2 cores; run it again
# after an interruption and finished cells are skipped.
#   bash scripts/gal-bald-question.sh
# ACTIVELAB and SWEEP_CODE: see scripts/evidence-commands.sh.
source "$(dirname "$0")/evidence-commands.sh"
shopt -s nullglob
[ -f data/mnist-5k.npz ] || "$python" scripts/mnist-5k.py data/mnist-5k.npz
"${sweep[@]}" sweep examples/mnist-5k-gal.toml --workers 2
# The random and whole-pool BALD arms are cells of the Fashion-MNIST study (scripts/fashion-mnist-evidence.sh)
# under the same names and settings: when it has run, its cells are copied instead of run again.
mkdir -p results/fashion-mnist-pool-subset/cells
for cell in results/fashion-mnist-study/cells/fashion-mnist-{random,bald}-cnn-seed*; do
  target=results/fashion-mnist-pool-subset/cells/$(basename "$cell")
  [ -e "$target" ] || cp -a "$cell" "$target"
done
"${sweep[@]}" sweep examples/fashion-mnist-pool-subset.toml --workers 2
"$activelab" report results/mnist-5k-gal --out report/mnist-5k-gal --diagnostics --target 0.85 --target 0.9 --target 0.95
"$python" scripts/results_table.py report/mnist-5k-gal
"$activelab" report results/fashion-mnist-pool-subset --out report/fashion-mnist-pool-subset --diagnostics \
  --target 0.7 --target 0.75 --target 0.8
"$python" scripts/results_table.py report/fashion-mnist-pool-subset
