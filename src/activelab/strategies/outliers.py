"""The study's outlier strategies: model-based outliers over activations, and GLOSH over embeddings.

Model-based outliers pick the pool items that activate the model least: ``act_N_L`` holds each item's
mean activation at L layers (backbone, head hidden layer, logits). The layers differ in scale and
spread (ReLU features against signed logits), so each layer column is standardised over the pool
(zero mean, unit variance; a constant column is dropped) before the mean or max over layers;
otherwise the widest-ranging layer alone would decide the ranking.

GLOSH (Global-Local Outlier Score from Hierarchies) compares the density at which an item leaves its
HDBSCAN cluster with the highest density inside that cluster: ``1 - lambda_item / lambda_max``, in
[0, 1], high for outliers. HDBSCAN costs roughly ``O(N log N)`` to ``O(N^2)``, so it is fitted on at
most ``max_fit`` items drawn with ``rng``; the other items are placed in the fitted hierarchy as
``hdbscan.approximate_predict`` and ``hdbscan.approximate_predict_scores`` do (nearest fitted item by
mutual reachability, then its cluster). That placement is re-implemented here with numpy over chunks
of items, because the library scores every item 1 when the fitted hierarchy never splits (a common
case for one blob of embeddings), and needs two passes (labels, scores) that each loop over items in
Python with a linear scan of the tree per item. Both give identical results otherwise, except that a
score below 0 (an item denser than its cluster's densest fitted item) is clipped to 0 (tested). The
cost left is one nearest-neighbour query per item in the fitted set's KD-tree, about 0.15 ms per item
at D = 32 with 20,000 fitted items, i.e. a few minutes for a million-item pool.
Exact duplicates meet at distance 0, an infinite density; such densities are capped at the largest
finite one of the hierarchy so that GLOSH stays defined (the library returns NaN there).

References
----------
.. [1] Campello, R. J. G. B., Moulavi, D., Zimek, A. & Sander, J. (2015). Hierarchical density
       estimates for data clustering, visualization, and outlier detection. ACM TKDD 10(1).
.. [2] McInnes, L., Healy, J. & Astels, S. (2017). hdbscan: hierarchical density based clustering.
       JOSS 2(11).
.. [3] Monarch, R. (2021). Human-in-the-Loop Machine Learning, ch. 4 (model-based outliers).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import hdbscan
import numpy as np

from activelab.errors import ConfigError
from activelab.strategies.base import Selection, register, select_top
from activelab.strategies.bayesian import chunk_slices
from activelab.validation import check_int

log = logging.getLogger(__name__)

MONARCH = "Monarch 2021, Human-in-the-Loop Machine Learning, ch. 4"
CAMPELLO = "Campello et al. 2015 (GLOSH); McInnes et al. 2017 (hdbscan)"

#: Within each cluster, items at or above this quantile of its GLOSH scores are taken first.
OUTLIER_QUANTILE = 0.9
#: cluster_outlier_combined halves min_cluster_size at most this many times before ranking by GLOSH alone.
MAX_HALVINGS = 3
#: The effective min_cluster_size is at most this fraction of the fitted items (small pools).
MAX_CLUSTER_FRACTION = 0.05


def standardised_activations(act_N_L: np.ndarray) -> np.ndarray:
    """Standardise each layer column of ``act_N_L`` over the pool, dropping constant columns.

    A constant layer carries no information; kept as a column of zeros it would clamp the max over
    layers at 0. (Constant means ``max == min``: the std of a constant column can round to 1e-17.)
    """
    if act_N_L.shape[1] == 0:
        raise ConfigError(f"`act_N_L` must have at least one layer column, got shape {act_N_L.shape}.")
    act = np.asarray(act_N_L, dtype=np.float64)
    if act.shape[0] == 0:
        return act.copy()
    act = act[:, act.max(axis=0) > act.min(axis=0)]
    return (act - act.mean(axis=0)) / act.std(axis=0)


def _combine(act_N_L: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    standard = standardised_activations(act_N_L)
    if standard.shape[1] == 0:
        return np.zeros(standard.shape[0])
    return -reduce(standard, axis=1)


def score_mb_outliers_mean(act_N_L: np.ndarray) -> np.ndarray:
    """Minus the mean over layers of the standardised activations: high for items the model barely sees."""
    return _combine(act_N_L, np.mean)


def score_mb_outliers_max(act_N_L: np.ndarray) -> np.ndarray:
    """Minus the max over layers of the standardised activations: high when every layer is quiet."""
    return _combine(act_N_L, np.max)


def _register_mb(name: str, score: Callable[[np.ndarray], np.ndarray], how: str) -> None:
    def select(n: int, *, rng: np.random.Generator, act_N_L: np.ndarray) -> Selection:
        return select_top(score(act_N_L), n, rng=rng)

    select.__name__ = f"select_{name}"
    select.__doc__ = (f"Pick the ``n`` pool items with the lowest {how} of standardised layer activations "
                      "(score = minus that value).")
    register(name, needs=("act_N_L",), family="diversity", reference=MONARCH,
             description=f"lowest {how} over layers of the standardised mean activations")(select)


_register_mb("mb_outliers_mean", score_mb_outliers_mean, "mean")
_register_mb("mb_outliers_max", score_mb_outliers_max, "max")


class _Hierarchy(NamedTuple):
    """A fitted condensed tree as flat arrays; cluster nodes are indexed ``0..K-1`` (0 is the root)."""

    point_node: np.ndarray     # (n_fit,) node each fitted item falls out of
    point_lambda: np.ndarray   # (n_fit,) density 1/distance at which it falls out (capped)
    node_parent: np.ndarray    # (K,) parent node, -1 for the root
    node_birth: np.ndarray     # (K,) density at which the node splits off its parent
    node_deepest: np.ndarray   # (K,) highest density reached inside the node's subtree
    node_label: np.ndarray     # (K,) flat cluster label of the node (selected ancestor), -1 if none
    lambda_cap: float

    def glosh(self, nodes: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
        """``1 - lambda / lambda_max`` of items leaving ``nodes`` at ``lambdas``, clipped to [0, 1]."""
        deepest = self.node_deepest[nodes]
        ratio = np.divide(lambdas, deepest, out=np.ones_like(lambdas), where=deepest > 0)
        return np.clip(1.0 - ratio, 0.0, 1.0)


def _hierarchy(clusterer: hdbscan.HDBSCAN) -> _Hierarchy:
    tree = clusterer.condensed_tree_.to_numpy()
    root = int(tree["parent"].min())
    finite = tree["lambda_val"][np.isfinite(tree["lambda_val"])]
    lambda_cap = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    lambdas = np.minimum(tree["lambda_val"], lambda_cap)
    parents, children = tree["parent"] - root, tree["child"]
    is_point = children < root
    n_nodes = int(parents.max()) + 1
    point_node = np.empty(root, dtype=np.int64)
    point_lambda = np.empty(root)
    point_node[children[is_point]] = parents[is_point]
    point_lambda[children[is_point]] = lambdas[is_point]
    node_parent = np.full(n_nodes, -1, dtype=np.int64)
    node_birth = np.full(n_nodes, np.inf)
    node_parent[children[~is_point] - root] = parents[~is_point]
    node_birth[children[~is_point] - root] = lambdas[~is_point]
    node_deepest = np.zeros(n_nodes)
    np.maximum.at(node_deepest, parents, lambdas)
    for node in range(n_nodes - 1, 0, -1):   # children are numbered after their parents
        node_deepest[node_parent[node]] = max(node_deepest[node_parent[node]], node_deepest[node])
    node_label = np.full(n_nodes, -1, dtype=np.int64)
    for node, label in clusterer.prediction_data_.cluster_map.items():
        node_label[int(node) - root] = label
    return _Hierarchy(point_node, point_lambda, node_parent, node_birth, node_deepest, node_label, lambda_cap)


def _predict(clusterer: hdbscan.HDBSCAN, hierarchy: _Hierarchy,
             points_B_D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and GLOSH scores of items outside the fit, as hdbscan's approximate predictions."""
    data = clusterer.prediction_data_
    min_samples = clusterer.min_samples
    distances, fitted = data.tree.query(points_B_D, k=min(2 * min_samples, data.core_distances.size))
    reach = np.maximum(np.maximum(data.core_distances[fitted], distances[:, [min_samples]]), distances)
    rows = np.arange(points_B_D.shape[0])
    best = np.argmin(reach, axis=1)
    neighbour, reach = fitted[rows, best], reach[rows, best]
    lambdas = np.divide(1.0, reach, out=np.full(reach.size, np.inf), where=reach > 0)
    duplicate = distances[:, 0] == 0
    lambdas[duplicate] = hierarchy.point_lambda[neighbour[duplicate]]
    lambdas = np.minimum(lambdas, hierarchy.lambda_cap)
    nodes = hierarchy.point_node[neighbour]
    scores = hierarchy.glosh(nodes, lambdas)
    # An item less dense than the level at which its neighbour left climbs to the node alive at its density.
    climbing = hierarchy.point_lambda[neighbour] > lambdas
    while True:
        parents = hierarchy.node_parent[nodes]
        move = climbing & (parents >= 0) & (hierarchy.node_birth[nodes] >= lambdas)
        if not move.any():
            return hierarchy.node_label[nodes], scores
        nodes = np.where(move, parents, nodes)


def _fit_rows(n_pool: int, max_fit: int, rng: np.random.Generator) -> np.ndarray:
    if n_pool <= max_fit:
        return np.arange(n_pool)
    return np.sort(rng.choice(n_pool, max_fit, replace=False))


def _effective_min_cluster_size(min_cluster_size: int, n_fit: int) -> int:
    return max(2, min(min_cluster_size, int(MAX_CLUSTER_FRACTION * n_fit)))


def hdbscan_glosh(emb_N_D: np.ndarray, fit_rows: np.ndarray, *, min_cluster_size: int,
                  min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN cluster labels and GLOSH outlier scores of every pool item, fitting only ``fit_rows``.

    Parameters
    ----------
    emb_N_D : numpy.ndarray, shape (N, D)
        Pool embeddings.
    fit_rows : numpy.ndarray, shape (F,)
        Sorted pool positions HDBSCAN is fitted on; every other item is placed in the fitted hierarchy.
    min_cluster_size : int
        HDBSCAN's ``min_cluster_size`` (at least 2).
    min_samples : int
        HDBSCAN's ``min_samples`` (capped at ``F - 1``).

    Returns
    -------
    labels_N : numpy.ndarray, shape (N,)
        Flat cluster label of each item, -1 for noise.
    glosh_N : numpy.ndarray, shape (N,)
        GLOSH outlier score in [0, 1], higher for stronger outliers.

    References
    ----------
    .. [1] Campello et al. (2015), Hierarchical density estimates for data clustering, visualization,
           and outlier detection.
    """
    n_pool, width = emb_N_D.shape
    labels_N, glosh_N = np.full(n_pool, -1, dtype=np.int64), np.zeros(n_pool)
    if fit_rows.size < 2:
        return labels_N, glosh_N
    clusterer = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(min_samples, fit_rows.size - 1),
                                prediction_data=True)
    clusterer.fit(np.asarray(emb_N_D[fit_rows], dtype=np.float64))
    hierarchy = _hierarchy(clusterer)
    labels_N[fit_rows] = clusterer.labels_
    glosh_N[fit_rows] = hierarchy.glosh(hierarchy.point_node, hierarchy.point_lambda)
    rest = np.setdiff1d(np.arange(n_pool), fit_rows, assume_unique=True)
    for rows in chunk_slices(rest.size, width + 8 * clusterer.min_samples):
        points = np.asarray(emb_N_D[rest[rows]], dtype=np.float64)
        labels_N[rest[rows]], glosh_N[rest[rows]] = _predict(clusterer, hierarchy, points)
    return labels_N, glosh_N


def _check_hdbscan_options(min_cluster_size: int, min_samples: int, max_fit: int) -> tuple[int, int, int]:
    return (check_int(min_cluster_size, "min_cluster_size", minimum=2),
            check_int(min_samples, "min_samples", minimum=1), check_int(max_fit, "max_fit", minimum=2))


@register("outlier", needs=("emb_N_D",), family="diversity", reference=CAMPELLO,
          min_cluster_size=100, min_samples=1, max_fit=20000,
          description="highest GLOSH outlier score of HDBSCAN over the embeddings")
def select_outlier(n: int, *, rng: np.random.Generator, emb_N_D: np.ndarray, min_cluster_size: int = 100,
                   min_samples: int = 1, max_fit: int = 20000) -> Selection:
    """Pick the ``n`` pool items with the highest GLOSH outlier scores.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the fitted subsample when ``N > max_fit`` and breaks ties.
    emb_N_D : numpy.ndarray, shape (N, D)
        Pool embeddings.
    min_cluster_size : int, default 100
        HDBSCAN's ``min_cluster_size`` (the study's value), lowered to 5 % of the fitted items on
        small pools, never below 2.
    min_samples : int, default 1
        HDBSCAN's ``min_samples`` (the study's value).
    max_fit : int, default 20000
        HDBSCAN is fitted on at most this many items drawn with ``rng``; the rest are placed in its
        hierarchy.

    Returns
    -------
    Selection
        Positions by decreasing GLOSH score, with the scores.

    References
    ----------
    .. [1] Campello et al. (2015), Hierarchical density estimates for data clustering, visualization,
           and outlier detection.
    """
    min_cluster_size, min_samples, max_fit = _check_hdbscan_options(min_cluster_size, min_samples, max_fit)
    fit_rows = _fit_rows(emb_N_D.shape[0], max_fit, rng)
    _, glosh_N = hdbscan_glosh(emb_N_D, fit_rows, min_samples=min_samples,
                               min_cluster_size=_effective_min_cluster_size(min_cluster_size, fit_rows.size))
    return select_top(glosh_N, n, rng=rng)


@register("cluster_outlier_combined", needs=("emb_N_D",), family="diversity", reference=CAMPELLO,
          min_cluster_size=100, min_samples=1, max_fit=20000,
          description="the most outlying items of every HDBSCAN cluster, taken round-robin across clusters")
def select_cluster_outlier_combined(n: int, *, rng: np.random.Generator, emb_N_D: np.ndarray,
                                    min_cluster_size: int = 100, min_samples: int = 1,
                                    max_fit: int = 20000) -> Selection:
    """Cover every HDBSCAN cluster with its most outlying items, round-robin across clusters.

    Noise (label -1) is a group of its own. Within each group, items are ranked by GLOSH; those at or
    above the group's 0.9 quantile come first. The batch takes the top item of every group, then the
    second of every group, and so on (within a round, higher GLOSH first); when the above-quantile
    items run out, the remaining items follow in the same round-robin order, so the batch is always
    filled.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the fitted subsample when ``N > max_fit`` and breaks ties.
    emb_N_D : numpy.ndarray, shape (N, D)
        Pool embeddings.
    min_cluster_size, min_samples, max_fit : int
        As for :func:`select_outlier` (defaults 100, 1 and 20000).

    Returns
    -------
    Selection
        Positions in round-robin order, each with its GLOSH score.

    Notes
    -----
    If HDBSCAN finds fewer than 2 clusters, ``min_cluster_size`` is halved (never below 2) and the
    clustering refitted, at most 3 times; if there are still fewer than 2 clusters the batch is the top
    ``n`` by the first fit's GLOSH score, as :func:`select_outlier`. The study's retry loop had no such
    bound and could spin forever.

    References
    ----------
    .. [1] Campello et al. (2015), Hierarchical density estimates for data clustering, visualization,
           and outlier detection.
    """
    min_cluster_size, min_samples, max_fit = _check_hdbscan_options(min_cluster_size, min_samples, max_fit)
    fit_rows = _fit_rows(emb_N_D.shape[0], max_fit, rng)
    size = _effective_min_cluster_size(min_cluster_size, fit_rows.size)
    first_glosh_N = None
    for halving in range(MAX_HALVINGS + 1):
        labels_N, glosh_N = hdbscan_glosh(emb_N_D, fit_rows, min_cluster_size=size, min_samples=min_samples)
        first_glosh_N = glosh_N if first_glosh_N is None else first_glosh_N
        n_clusters = np.unique(labels_N[labels_N >= 0]).size
        if n_clusters >= 2:
            return _round_robin(labels_N, glosh_N, n, rng)
        if size == 2 or halving == MAX_HALVINGS:
            break
        size = max(2, size // 2)
    log.info("HDBSCAN found %d cluster(s) down to min_cluster_size=%d; ranking by GLOSH alone.", n_clusters, size)
    return select_top(first_glosh_N, n, rng=rng)


def _round_robin(labels_N: np.ndarray, glosh_N: np.ndarray, n: int, rng: np.random.Generator) -> Selection:
    """Order items by (below the group's quantile, round, -GLOSH), ties at random, and keep ``n``.

    Grouping needs one sort of the pool (``O(N log N)``), negligible beside the clustering.
    """
    n_pool = labels_N.size
    ties_N = rng.random(n_pool)
    order = np.lexsort((ties_N, -glosh_N, labels_N))
    groups, starts, sizes = np.unique(labels_N[order], return_index=True, return_counts=True)
    thresholds = np.array([np.quantile(glosh_N[order[start:start + size]], OUTLIER_QUANTILE)
                           for start, size in zip(starts, sizes)])
    group_N = np.searchsorted(groups, labels_N)
    below_N = glosh_N < thresholds[group_N]
    n_above = np.bincount(group_N[~below_N], minlength=groups.size)
    rank_N = np.empty(n_pool, dtype=np.int64)
    rank_N[order] = np.arange(n_pool) - np.repeat(starts, sizes)
    round_N = np.where(below_N, rank_N - n_above[group_N], rank_N)
    chosen = np.lexsort((ties_N, -glosh_N, round_N, below_N))[:n]
    return Selection(chosen, glosh_N[chosen])
