#!/usr/bin/env bash
# Makes sure Label Studio 1.23.2 (the version the tests run against) is installed in a virtual environment
# of its own, apart from activelab's: Label Studio pins Django, pydantic and many other packages.
# The environment is $LABEL_STUDIO_VENV (default: .venv-labelstudio beside this repository's .venv).
# Installing takes about a minute and is done once; a finished install is marked by a stamp file, so
# calling this again is instant. Never runs `label-studio --version` (it hangs without internet).
# Usage: scripts/ensure-label-studio.sh [PYTHON]   (the interpreter that creates the environment)
# Prints the path of the `label-studio` executable on its last line.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LABEL_STUDIO_VENV:-$repo_dir/.venv-labelstudio}"
python_bin="${1:-python3}"
spec="label-studio==1.23.2"
stamp="$venv/.installed-label-studio-1.23.2"

if [ ! -f "$stamp" ] || [ ! -x "$venv/bin/label-studio" ]; then
    echo "Installing $spec into $venv (about a minute, once) ..." >&2
    test -x "$venv/bin/python" || "$python_bin" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet "$spec" >&2
    touch "$stamp"
fi
echo "$venv/bin/label-studio"
