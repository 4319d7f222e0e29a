"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), always available offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activelab.data.base import ArrayDataset, Dataset
from activelab.data.sources import Source, register_source


def load(data_dir: Path | None = None) -> Dataset:
    """Digits as 1x8x8 images scaled to [0, 1] and standardised (no predefined test split)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    return ArrayDataset("digits", images, bunch.target, tuple(str(d) for d in range(10)),
                        mean=(float(images.mean()),), std=(float(images.std()),))


register_source(Source(name="digits", description="scikit-learn's 8x8 handwritten digits, bundled offline",
                       load=load, locate=lambda data_dir=None: Path("sklearn"), classes=10, size="1,797"))
