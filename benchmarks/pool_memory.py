"""Peak memory of scoring a pool streamed from disk: it follows the batch size, not the pool size.

For every pool size this writes a synthetic HDF5 file of 1x28x28 uint8 images (chunked by 1,024
images, with labels) to a temporary folder, then scores the whole pool in a fresh process through the
``arrays`` source and :func:`activelab.data.loading.make_loader` with a tiny CNN (the predictive entropy
of every image, kept as one float32 per item, the only output that grows with the pool). The child
reports its resident memory before scoring and its peak (``VmHWM``) after, so the table shows what
scoring adds on top of Python, torch and the model.

Run from the repository root::

    .venv/bin/python benchmarks/pool_memory.py     # pools of 100,000 and 1,000,000, batches of 512 and 4,096
    .venv/bin/python benchmarks/pool_memory.py --sizes 20000 --batch-sizes 256 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import write_pool


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def score_pool(path: Path, batch_size: int, workers: int) -> dict:
    """Score every image of the pool at ``path``; return memory and time figures (runs in the child)."""
    import torch

    from activelab.data.loading import make_loader
    from activelab.data.sources import get_source

    torch.set_num_threads(1)  # on a busy 2-core machine, more OpenMP threads spin-wait and crawl
    data = get_source("arrays").load(data_dir=path)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, data.num_classes)).eval()
    scores = np.empty(len(data), dtype=np.float32)
    loader = make_loader(data, np.arange(len(data)), batch_size=batch_size, num_workers=workers)
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    done = 0
    with torch.no_grad():
        for images in loader:
            probs = torch.softmax(model(images), dim=1)
            scores[done:done + len(images)] = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).numpy()
            done += len(images)
    seconds = time.perf_counter() - started
    assert done == len(data) and np.isfinite(scores).all()
    return {"pool": len(data), "batch": batch_size, "rss_before_mb": before, "peak_rss_mb": _status_mb("VmHWM"),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="pool sizes to test")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 4096], help="batch sizes to test")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(score_pool(args.child, args.batch_sizes[0], args.workers)))
        return
    print(f"{'pool':>10} {'batch':>6} {'file MiB':>9} {'RSS before MiB':>15} {'peak RSS MiB':>13} "
          f"{'added MiB':>10} {'seconds':>8} {'images/s':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"pool-{size}.h5"
            write_pool(path, size)
            for batch_size in args.batch_sizes:
                command = [sys.executable, __file__, "--child", str(path), "--batch-sizes", str(batch_size),
                           "--workers", str(args.workers)]
                result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                print(f"{result['pool']:>10,} {result['batch']:>6} {path.stat().st_size / 2**20:>9.0f} "
                      f"{result['rss_before_mb']:>15.0f} {result['peak_rss_mb']:>13.0f} "
                      f"{result['peak_rss_mb'] - result['rss_before_mb']:>10.0f} {result['seconds']:>8.1f} "
                      f"{result['pool'] / result['seconds']:>9,.0f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
