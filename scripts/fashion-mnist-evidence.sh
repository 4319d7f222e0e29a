#!/usr/bin/env bash
# The Fashion-MNIST evidence of docs/results.md: both sweeps (started or resumed), then both reports with
# diagnostics, then the tables docs/results.md shows. Several hours on 2 cores; re-run it after an
# interruption and finished cells are skipped.
#   bash scripts/fashion-mnist-evidence.sh
# ACTIVELAB names the activelab command (default .venv/bin/activelab).
set -euo pipefail
cd "$(dirname "$0")/.."
activelab=${ACTIVELAB:-.venv/bin/activelab}
python=$(dirname "$activelab")/python
for study in fashion-mnist-study fashion-mnist-large-budget; do
  "$activelab" sweep "examples/$study.toml" --workers 2
done
for study in fashion-mnist-study fashion-mnist-large-budget; do
  "$activelab" report "results/$study" --out "report/$study" --diagnostics
  "$python" scripts/results_table.py "report/$study"
done
