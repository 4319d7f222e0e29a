#!/usr/bin/env bash
# The Fashion-MNIST evidence of docs/results.md: both sweeps (started or resumed), then both reports with
# diagnostics, then the tables docs/results.md shows. Several hours on 2 cores; run it again after an
# interruption and finished cells are skipped.
#   bash scripts/fashion-mnist-evidence.sh
# ACTIVELAB and SWEEP_CODE: see scripts/evidence-commands.sh.
source "$(dirname "$0")/evidence-commands.sh"
for study in fashion-mnist-study fashion-mnist-large-budget; do
  "${sweep[@]}" sweep "examples/$study.toml" --workers 2
done
for study in fashion-mnist-study fashion-mnist-large-budget; do
  "$activelab" report "results/$study" --out "report/$study" --diagnostics \
    --target 0.7 --target 0.75 --target 0.8 --target 0.85
  "$python" scripts/results_table.py "report/$study"
done
