# Sourced by the evidence scripts (scripts/fashion-mnist-evidence.sh, scripts/gal-bald-question.sh): stop
# at the first error, run from the checkout, and name the commands they use.
# ACTIVELAB names the activelab command (default .venv/bin/activelab). SWEEP_CODE, when set, is a folder
# holding the `activelab` package the sweeps import instead of this checkout's (a copy of the commit the
# sweeps started with, so that every cell runs the same code even when the checkout moves on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
activelab=${ACTIVELAB:-.venv/bin/activelab}
python=$(dirname "$activelab")/python
sweep=("$activelab")
if [ -n "${SWEEP_CODE:-}" ]; then
  sweep=(env "PYTHONPATH=$SWEEP_CODE" "$activelab")
fi
