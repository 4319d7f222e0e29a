#!/usr/bin/env bash
# Makes sure the Fashion-MNIST idx files are on this machine.
# Order: Debian's location /usr/share/datasets/fashion-mnist already holds them; else the Debian package
# `dataset-fashion-mnist` when apt-get is usable (as root); else `activelab fetch fashion-mnist`, which
# finds a copy in $ACTIVELAB_DATA/fashion-mnist or the cache, or downloads the official files into the
# cache and checks their MD5.
# Usage: scripts/ensure-fashion-mnist.sh [PYTHON]   (the interpreter that has activelab installed)
set -euo pipefail
python_bin="${1:-python3}"
debian_dir=/usr/share/datasets/fashion-mnist

debian_copy_complete() {
    local stem
    for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [ -f "$debian_dir/$stem.gz" ] || return 1
    done
}

if debian_copy_complete; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "Installing Debian package dataset-fashion-mnist ..."
    if (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
        (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)); then
        debian_copy_complete && exit 0
    fi
    echo "apt-get could not install dataset-fashion-mnist; looking for a copy or downloading the official files."
fi
"$python_bin" -m activelab.cli fetch fashion-mnist
