"""What a run records about where it ran: versions, git commit, platform, threads."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("activelab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "numpy", "scipy",
            "scikit-learn", "hdbscan", "h5py")


def git_commit() -> str | None:
    """The commit of the activelab checkout this code runs from (with ``-dirty``), or None."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def describe() -> dict:
    """A JSON-ready record of the software and machine."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version.split()[0], "packages": versions, "git_commit": git_commit(),
            "platform": platform.platform(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
