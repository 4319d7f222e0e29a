"""Why a strategy wins or loses: the classes its last model misses and how typical its acquired images are.

Accuracy curves say *that* a strategy trails random, not *why*. Two measurements per finished run, read
from its run directory (saved configuration, label ledger, last model) without changing anything there:

* **Class recall** of the run's last model on its test items. Uncertainty sampling can stop asking about a
  class the model confidently gets wrong, so that class stays near zero recall while the others improve:
  the sampling bias of active learning (Dasgupta, "Two faces of active learning", TCS 2011). It shows as
  a low worst-class recall even where the accuracy curve only looks flat.
* **Typicality** of the acquired images: the mean distance of each acquired image to its ``k`` nearest
  neighbours among a random sample of the run's pool, divided by the same mean for the sample's own
  images. 1 is as typical as a random pick; above 1 the strategy buys outliers, which top-k BALD is known
  to do on small budgets (Kirsch et al., "Stochastic Batch Acquisition", TMLR 2023) and TypiClust avoids
  by design (Hacohen et al., "Active Learning on a Budget", ICML 2022). Distances are measured in a space
  that does not depend on any strategy's model: the first principal components of the images' pixels,
  average-pooled to at most 32 x 32, fitted on the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from activelab.config import PYTHON_MODEL_PREFIX, RunConfig
from activelab.data.base import Dataset
from activelab.data.sources import get_source
from activelab.data.state import LabelState
from activelab.errors import ConfigError, StateError
from activelab.inference import predict_probs
from activelab.models import build_model
from activelab.models.modes import set_train_mode
from activelab.run import load_weights

#: Neighbours whose mean distance measures how typical an image is.
NEIGHBOURS = 10
#: Pool images drawn as the reference sample (and to fit the principal components).
REFERENCE_SIZE = 5000
#: Principal components of the pooled pixels kept for distances.
COMPONENTS = 50
#: Largest side of the average-pooled images whose pixels are compared.
POOLED_SIDE = 32


@dataclass
class RunDiagnostics:
    """What :func:`diagnose_run` measured on one run (see the module's description)."""

    class_names: list[str]
    class_recall: np.ndarray  # per class; NaN for a class without test items
    class_test_items: np.ndarray  # test items per class
    n_acquired: int
    typicality: float  # NaN with no acquired images
    acquired_distance: float  # mean k-NN distance of the acquired images
    reference_distance: float  # mean k-NN distance of the reference sample's own images


def diagnose_run(run_dir: Path, *, cache: dict | None = None, seed: int = 0) -> RunDiagnostics:
    """Class recall of the last model and typicality of the acquired images of the run in ``run_dir``.

    ``cache`` keeps loaded datasets and fitted references between calls: the runs of one seed in a sweep
    share their dataset and pool, so their typicality is measured against the same sample (drawn with
    ``seed``). Raises a :class:`~activelab.errors.UserError` saying why when the run cannot be diagnosed
    (no trained round, a missing model file, a network defined in Python, a dataset not on disk).
    """
    run_dir = Path(run_dir)
    config = RunConfig.load_saved(run_dir)
    state = LabelState.load(run_dir / "state.json")
    if not state.rounds:
        raise StateError(f"the run in {run_dir} has no trained round yet.")
    if config.model_class.startswith(PYTHON_MODEL_PREFIX):
        raise ConfigError(f"the run in {run_dir} trains a network defined in Python, which cannot be rebuilt "
                          "from its folder.")
    cache = cache if cache is not None else {}
    dataset = _dataset(config, cache)
    model = _last_model(run_dir, config, dataset, state.rounds[-1].round)
    if state.test_labels is None:
        test_ids, test_labels = state.test_ids, dataset.labels[state.test_ids]
    else:
        test_ids, test_labels = state.labelled_test
    if test_ids.size == 0:
        raise StateError(f"the run in {run_dir} has no labelled test items.")
    predictions = predict_probs(model, dataset, test_ids, batch_size=256, device="cpu", num_workers=0).argmax(1)
    recall, counts = class_recall(predictions, test_labels, dataset.num_classes)
    acquired = state.labelled_ids[state.labelled_rounds > 0]
    reference = _reference(dataset, state.train_ids, seed, cache)
    acquired_distance = reference.distance(pooled_pixels(dataset, acquired), acquired)
    return RunDiagnostics(class_names=list(dataset.class_names), class_recall=recall, class_test_items=counts,
                          n_acquired=int(acquired.size), typicality=acquired_distance / reference.mean_distance,
                          acquired_distance=acquired_distance, reference_distance=reference.mean_distance)


def class_recall(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall of every class (NaN for a class with no items) and the number of items of each class."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predictions == labels], minlength=num_classes)
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan), counts


@dataclass
class Reference:
    """A random sample of a pool in the space of its first principal components, and the mean distance of
    its own points to their ``k`` nearest neighbours in it (the yardstick of typicality)."""

    ids: np.ndarray
    centre: np.ndarray
    axes: np.ndarray
    points: np.ndarray
    k: int
    mean_distance: float = float("nan")

    @classmethod
    def fit(cls, features: np.ndarray, ids: np.ndarray, *, k: int = NEIGHBOURS,
            components: int = COMPONENTS) -> "Reference":
        """Fit the principal components on ``features`` (one row per sampled image, ``ids`` theirs)."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[0] <= k:
            raise ConfigError(f"{features.shape[0]} reference images are too few to find {k} neighbours of each.")
        centre = features.mean(axis=0)
        _, _, axes = np.linalg.svd(features - centre, full_matrices=False)
        axes = axes[:components].T
        reference = cls(np.asarray(ids), centre, axes, (features - centre) @ axes, k)
        reference.mean_distance = reference.distance(features, ids)
        return reference

    def distance(self, features: np.ndarray, ids: np.ndarray) -> float:
        """Mean distance of the rows of ``features`` to their ``k`` nearest reference points, a point never
        being its own neighbour (reference points with the row's id are left out); NaN for no rows."""
        if len(features) == 0:
            return float("nan")
        points = (np.asarray(features, dtype=np.float64) - self.centre) @ self.axes
        ids = np.asarray(ids)
        squared_reference = (self.points ** 2).sum(axis=1)
        distances = []
        for start in range(0, len(points), 512):
            block = points[start:start + 512]
            squared = (block ** 2).sum(axis=1)[:, None] + squared_reference[None, :] - 2.0 * block @ self.points.T
            squared[ids[start:start + 512, None] == self.ids[None, :]] = np.inf
            nearest = np.partition(squared, self.k - 1, axis=1)[:, :self.k]
            distances.append(np.sqrt(np.maximum(nearest, 0.0)).mean(axis=1))
        return float(np.concatenate(distances).mean())


def pooled_pixels(dataset: Dataset, ids: np.ndarray, *, side: int = POOLED_SIDE, chunk: int = 1024) -> np.ndarray:
    """The images at ``ids`` average-pooled to at most ``side`` x ``side``, flattened (one row per image)."""
    channels, height, width = dataset.input_shape
    size = (min(side, height), min(side, width))
    rows = np.empty((len(ids), channels * size[0] * size[1]), dtype=np.float32)
    for start in range(0, len(ids), chunk):
        images = dataset.load(np.asarray(ids[start:start + chunk]))
        rows[start:start + len(images)] = F.adaptive_avg_pool2d(images, size).flatten(1).numpy()
    return rows


def _dataset(config: RunConfig, cache: dict) -> Dataset:
    key = ("dataset", config.data_class, config.data_dir, repr(sorted(config.source_options().items())))
    if key not in cache:
        data_dir = Path(config.data_dir) if config.data_dir else None
        cache[key] = get_source(config.data_class).load(data_dir, **config.source_options())
    return cache[key]


def _reference(dataset: Dataset, pool: np.ndarray, seed: int, cache: dict) -> Reference:
    """The reference sample of ``pool`` (the run's pool before any labelling), fitted once per pool."""
    key = ("reference", id(dataset), pool.size, hash(pool.tobytes()), seed)
    if key not in cache:
        ids = np.sort(np.random.default_rng(seed).choice(pool, size=min(REFERENCE_SIZE, pool.size), replace=False))
        cache[key] = Reference.fit(pooled_pixels(dataset, ids), ids)
    return cache[key]


def _last_model(run_dir: Path, config: RunConfig, dataset: Dataset, round_index: int):
    """The run's network with the weights of ``round_index`` (built without pretrained weights: the saved
    weights replace them, and nothing has to be downloaded)."""
    model = build_model(config.model_class, dataset.input_shape, dataset.num_classes)
    model = set_train_mode(model, config.train_mode)
    model.load_state_dict(load_weights(run_dir / "models" / f"round_{round_index:03d}.pt"))
    return model.eval()
