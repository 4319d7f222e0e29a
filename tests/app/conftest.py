"""Fixtures of the labelling-app tests: real Fashion-MNIST images written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def fashion_pngs(tmp_path_factory, fashion) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """80 Fashion-MNIST test images written as PNG files (seeded draw), their true labels and the class names."""
    from activelab.data.sources import get_source

    folder = tmp_path_factory.mktemp("fashion-png")
    raw = get_source("fashion-mnist").load(download_missing=False)
    test = np.flatnonzero(raw.predefined_test)
    chosen = np.sort(np.random.default_rng(0).choice(test, size=80, replace=False))
    images = raw._images[chosen]
    paths = []
    for number, (item, pixels) in enumerate(zip(chosen, images)):
        path = folder / f"item{number:03d}-{int(item)}.png"
        Image.fromarray(np.asarray(pixels, dtype=np.uint8).reshape(28, 28)).save(path)
        paths.append(path)
    return paths, fashion.labels[chosen], fashion.class_names


