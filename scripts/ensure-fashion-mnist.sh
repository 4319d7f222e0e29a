#!/usr/bin/env bash
# Makes sure the Fashion-MNIST idx files are on this machine.
# Order: already present (Debian's location or ACTIVELAB_DATA), Debian package `dataset-fashion-mnist`
# when apt-get is usable, else the official download through activelab itself.
set -euo pipefail
python_bin="${1:-python3}"
debian_dir=/usr/share/datasets/fashion-mnist
if [ -f "$debian_dir/train-images-idx3-ubyte.gz" ] && [ -f "$debian_dir/t10k-labels-idx1-ubyte.gz" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "Installing Debian package dataset-fashion-mnist ..."
    if (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
        (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)); then
        [ -f "$debian_dir/train-images-idx3-ubyte.gz" ] && exit 0
    fi
    echo "apt-get could not install dataset-fashion-mnist; downloading the official files instead."
fi
"$python_bin" -m activelab.cli fetch fashion-mnist
