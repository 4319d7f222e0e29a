"""Helper classifiers that some strategies need, trained on the frozen model's embeddings.

* Active transfer learning (ATL) learns where the model goes wrong: a 2-class head on the penultimate
  embedding, trained on the run's *holdout* split labelled "model right / model wrong". The holdout split
  is neither the test split nor the early-stopping split (the study reused its validation set for both).
* Discriminative active learning (DAL) learns to tell labelled from unlabelled items; the pool items it
  finds most "unlabelled-looking" are the least represented by the labelled set.

Both heads are logistic regressions (scikit-learn) with a fixed random state: a 2-class linear head on a
frozen network, as in the study, without another training loop.

References
----------
.. [1] Monarch, R. (2021). Human-in-the-Loop Machine Learning, ch. 5 (active transfer learning).
.. [2] Gissin, D. & Shalev-Shwartz, S. (2019). Discriminative Active Learning. arXiv:1907.06347.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)


def _fit_binary(features: np.ndarray, targets: np.ndarray, seed: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(features)
    head = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
    return scaler, head.fit(scaler.transform(features), targets)


def transfer_wrongness(holdout_emb: np.ndarray, holdout_correct: np.ndarray, pool_emb: np.ndarray,
                       seed: int) -> np.ndarray:
    """P(model wrong) for each pool item from a head trained on the holdout's right/wrong outcomes.

    When the holdout has only one outcome (the model is always right, or always wrong, there) no head can
    be learned and every pool item gets the same score, so the selection is uniformly random.
    """
    wrong = ~np.asarray(holdout_correct, dtype=bool)
    if wrong.all() or not wrong.any():
        log.warning("active transfer learning: the holdout has one outcome only; selecting at random")
        return np.full(pool_emb.shape[0], float(wrong.mean()))
    scaler, head = _fit_binary(holdout_emb, wrong.astype(int), seed)
    return head.predict_proba(scaler.transform(pool_emb))[:, 1]


def discriminator_unlabelled(labelled_emb: np.ndarray, pool_emb: np.ndarray, seed: int) -> np.ndarray:
    """P(unlabelled) for each pool item from a labelled-vs-pool head on a balanced subsample."""
    rng = np.random.default_rng(seed)
    n_each = min(labelled_emb.shape[0], pool_emb.shape[0])
    if n_each == 0:
        return np.zeros(pool_emb.shape[0])
    pool_sample = pool_emb[np.sort(rng.choice(pool_emb.shape[0], size=n_each, replace=False))]
    labelled_sample = labelled_emb[np.sort(rng.choice(labelled_emb.shape[0], size=n_each, replace=False))]
    features = np.concatenate([labelled_sample, pool_sample])
    targets = np.concatenate([np.zeros(n_each, int), np.ones(n_each, int)])
    scaler, head = _fit_binary(features, targets, seed)
    return head.predict_proba(scaler.transform(pool_emb))[:, 1]
