"""Outlier strategies: model-based outliers over layer activations, and HDBSCAN/GLOSH over the logits.

Model-based outliers pick the pool items that activate the model least, the rationale being that an
item the model barely responds to lacks what it has learned [3]. Activations are read at L = 3 layers
(backbone output, head hidden layer, logits): ``mb_outliers_mean`` averages each layer's mean
activation (``act_mean_N_L``) over the layers, ``mb_outliers_max`` takes the largest of each layer's
max activation (``act_max_N_L``); both pick the items with the LOWEST value, so the score is minus it.

By default (``standardise=True``) each layer column is first standardised over the pool (zero mean,
unit variance; a constant column carries no information and is dropped) so that every layer counts on
the same scale, as Monarch's model-based outliers [3] put every neuron on a common scale (its rank among
validation items) before averaging. The raw combination (``standardise=False``, the study's form) weighs
each layer by its spread: measured on the small CNN trained on 500 Fashion-MNIST images (4,000 pool
items, three seeds), the head's hidden layer held the largest activation for 88-100 % of the items and
the backbone for none, so the raw max over layers ranked as the hidden layer alone (Spearman 0.99-1.00,
97-100 of the 100 picks shared), and in the raw mean the backbone's spread was 2.4-8.4 times smaller than
the other layers' (docs/study-differences.md has the numbers).

GLOSH (Global-Local Outlier Score from Hierarchies) compares the density at which an item leaves its
HDBSCAN cluster with the highest density inside that cluster: ``1 - lambda_item / lambda_max``, in
[0, 1], high for outliers. Both HDBSCAN strategies work on the model's logits (``logits_N_C``), a
compact, class-shaped feature space. HDBSCAN costs roughly ``O(N log N)`` to ``O(N^2)``, so it is
fitted on at most ``max_fit`` items (default :data:`~activelab.strategies.diversity.DEFAULT_MAX_FIT`,
20,000; a strategy option) drawn with ``rng``, on every item of a pool no larger than that (then
nothing is drawn); the other items are placed in the fitted
hierarchy as ``hdbscan.approximate_predict`` and ``hdbscan.approximate_predict_scores`` do (nearest
fitted item by mutual reachability, then its cluster). That placement is re-implemented here with
numpy over chunks of items, because the library scores every item 1 when the fitted hierarchy never
splits (a common case for one blob of points), and needs two passes (labels, scores) that each loop
over items in Python with a linear scan of the tree per item. Both give identical results otherwise,
except that a score below 0 (an item denser than its cluster's densest fitted item) is clipped to 0
(tested). The cost left is one nearest-neighbour query per item in the fitted set's KD-tree, about
0.15 ms per item at D = 32 with 20,000 fitted items, i.e. a few minutes for a million-item pool.
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
from typing import NamedTuple

import hdbscan
import numpy as np

from activelab.errors import ConfigError
from activelab.strategies.base import Selection, chunk_slices, register, register_score, select_top
from activelab.strategies.diversity import DEFAULT_MAX_FIT
from activelab.validation import check_int

log = logging.getLogger(__name__)

MONARCH = "Monarch 2021, Human-in-the-Loop Machine Learning, ch. 4"
CAMPELLO = "Campello et al. 2015 (GLOSH); McInnes et al. 2017 (hdbscan)"

#: Default of the model-based-outlier scores' ``standardise`` option (see the module docstring).
DEFAULT_STANDARDISE = True
#: Within each cluster, items at or above this quantile of its GLOSH scores are its outliers.
OUTLIER_QUANTILE = 0.9
#: Percentage of each cluster's share of the batch drawn from its outliers (the rest from its other items).
OUTLIER_PERCENT = 20
#: cluster_outlier_combined halves min_cluster_size at most this many times while no cluster forms.
MAX_HALVINGS = 3
#: The effective min_cluster_size is at most this fraction of the fitted items (small pools).
MAX_CLUSTER_FRACTION = 0.05


def standardised_activations(layers_N_L: np.ndarray) -> np.ndarray:
    """Standardise each layer column of ``layers_N_L`` over the pool, dropping constant columns.

    A constant layer carries no information; kept as a column of zeros it would clamp the max over
    layers at 0. (Constant means ``max == min``: the std of a constant column can round to 1e-17.)
    """
    act = np.asarray(layers_N_L, dtype=np.float64)
    if act.shape[0] == 0:
        return act.copy()
    act = act[:, act.max(axis=0) > act.min(axis=0)]
    return (act - act.mean(axis=0)) / act.std(axis=0)


def _layer_values(layers_N_L: np.ndarray, name: str, standardise: object) -> np.ndarray:
    """The layer columns the model-based-outlier scores combine: standardised or raw, as float64."""
    if not isinstance(standardise, (bool, np.bool_)):
        raise ConfigError(f"`standardise`={standardise!r} must be True or False.")
    if layers_N_L.ndim != 2 or layers_N_L.shape[1] == 0:
        raise ConfigError(f"`{name}` must have at least one layer column, got shape {layers_N_L.shape}.")
    if standardise:
        return standardised_activations(layers_N_L)
    return np.asarray(layers_N_L, dtype=np.float64)


def score_mb_outliers_mean(act_mean_N_L: np.ndarray, *, standardise: bool = DEFAULT_STANDARDISE) -> np.ndarray:
    """Minus the mean over layers of each item's mean activation: high for items the model barely sees.

    Parameters
    ----------
    act_mean_N_L : numpy.ndarray, shape (N, L)
        Mean activation of each pool item at each of L layers.
    standardise : bool, default True
        Standardise each layer column over the pool first (see the module docstring); ``False`` averages
        the raw values.

    Returns
    -------
    numpy.ndarray, shape (N,)
        ``-mean_l a_l``; all zeros when standardising leaves no varying layer.

    References
    ----------
    .. [1] Monarch (2021), Human-in-the-Loop Machine Learning, ch. 4 (model-based outliers).
    """
    values = _layer_values(act_mean_N_L, "act_mean_N_L", standardise)
    return -values.mean(axis=1) if values.shape[1] else np.zeros(values.shape[0])


def score_mb_outliers_max(act_max_N_L: np.ndarray, *, standardise: bool = DEFAULT_STANDARDISE) -> np.ndarray:
    """Minus the max over layers of each item's max activation: high when every layer stays quiet.

    Parameters
    ----------
    act_max_N_L : numpy.ndarray, shape (N, L)
        Max activation of each pool item at each of L layers.
    standardise : bool, default True
        Standardise each layer column over the pool first (see the module docstring); ``False`` takes
        the max of the raw values.

    Returns
    -------
    numpy.ndarray, shape (N,)
        ``-max_l a_l``; all zeros when standardising leaves no varying layer.

    References
    ----------
    .. [1] Monarch (2021), Human-in-the-Loop Machine Learning, ch. 4 (model-based outliers).
    """
    values = _layer_values(act_max_N_L, "act_max_N_L", standardise)
    return -values.max(axis=1) if values.shape[1] else np.zeros(values.shape[0])


register_score("mb_outliers_mean", score_mb_outliers_mean, needs=("act_mean_N_L",), family="diversity",
               reference=MONARCH, standardise=DEFAULT_STANDARDISE,
               description="lowest mean over layers of the items' mean activations")
register_score("mb_outliers_max", score_mb_outliers_max, needs=("act_max_N_L",), family="diversity",
               reference=MONARCH, standardise=DEFAULT_STANDARDISE,
               description="lowest max over layers of the items' max activations")


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


def hdbscan_glosh(features_N_D: np.ndarray, fit_rows: np.ndarray, *, min_cluster_size: int,
                  min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN cluster labels and GLOSH outlier scores of every pool item, fitting only ``fit_rows``.

    Parameters
    ----------
    features_N_D : numpy.ndarray, shape (N, D)
        Pool features (the strategies pass the logits).
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
    n_pool, width = features_N_D.shape
    labels_N, glosh_N = np.full(n_pool, -1, dtype=np.int64), np.zeros(n_pool)
    if fit_rows.size < 2:
        return labels_N, glosh_N
    clusterer = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(min_samples, fit_rows.size - 1),
                                prediction_data=True)
    clusterer.fit(np.asarray(features_N_D[fit_rows], dtype=np.float64))
    hierarchy = _hierarchy(clusterer)
    labels_N[fit_rows] = clusterer.labels_
    glosh_N[fit_rows] = hierarchy.glosh(hierarchy.point_node, hierarchy.point_lambda)
    rest = np.setdiff1d(np.arange(n_pool), fit_rows, assume_unique=True)
    for rows in chunk_slices(rest.size, width + 8 * clusterer.min_samples):
        points = np.asarray(features_N_D[rest[rows]], dtype=np.float64)
        labels_N[rest[rows]], glosh_N[rest[rows]] = _predict(clusterer, hierarchy, points)
    return labels_N, glosh_N


def _check_hdbscan_options(min_cluster_size: int, min_samples: int, max_fit: int) -> tuple[int, int, int]:
    return (check_int(min_cluster_size, "min_cluster_size", minimum=2),
            check_int(min_samples, "min_samples", minimum=1), check_int(max_fit, "max_fit", minimum=2))


@register("outlier", needs=("logits_N_C",), family="diversity", reference=CAMPELLO,
          min_cluster_size=100, min_samples=1, max_fit=DEFAULT_MAX_FIT,
          description="highest GLOSH outlier score of HDBSCAN over the logits")
def select_outlier(n: int, *, rng: np.random.Generator, logits_N_C: np.ndarray, min_cluster_size: int = 100,
                   min_samples: int = 1, max_fit: int = DEFAULT_MAX_FIT) -> Selection:
    """Pick the ``n`` pool items with the highest GLOSH outlier scores over the logits.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the fitted subsample when ``N > max_fit`` and breaks ties.
    logits_N_C : numpy.ndarray, shape (N, C)
        Logits of the pool items, the feature space HDBSCAN clusters.
    min_cluster_size : int, default 100
        HDBSCAN's ``min_cluster_size``, lowered to 5 % of the fitted items on small pools, never below 2.
    min_samples : int, default 1
        HDBSCAN's ``min_samples``.
    max_fit : int, default :data:`~activelab.strategies.diversity.DEFAULT_MAX_FIT` (20,000)
        The bound that keeps big pools tractable: a pool of at most ``max_fit`` items is fitted whole;
        above it HDBSCAN is fitted on ``max_fit`` items drawn with ``rng`` and the rest are placed in
        its hierarchy in chunks, so memory is ``O(max_fit * C)`` for the fit plus a few vectors of
        length N.

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
    fit_rows = _fit_rows(logits_N_C.shape[0], max_fit, rng)
    _, glosh_N = hdbscan_glosh(logits_N_C, fit_rows, min_samples=min_samples,
                               min_cluster_size=_effective_min_cluster_size(min_cluster_size, fit_rows.size))
    return select_top(glosh_N, n, rng=rng)


@register("cluster_outlier_combined", needs=("logits_N_C",), family="diversity", reference=CAMPELLO,
          min_cluster_size=100, min_samples=1, max_fit=DEFAULT_MAX_FIT,
          description="an even share of the batch per HDBSCAN cluster of the logits, 20 % drawn from its GLOSH "
                      "outliers and 80 % from its other items")
def select_cluster_outlier_combined(n: int, *, rng: np.random.Generator, logits_N_C: np.ndarray,
                                    min_cluster_size: int = 100, min_samples: int = 1,
                                    max_fit: int = DEFAULT_MAX_FIT) -> Selection:
    """Cover every HDBSCAN cluster with both its typical items and its outliers.

    The batch is split evenly across the clusters, in label order; the remainder goes one item each to
    the first clusters. Inside a cluster, ``OUTLIER_PERCENT`` (20) % of its share, rounded down, is drawn
    at random from its outliers (GLOSH at or above the cluster's ``OUTLIER_QUANTILE`` (0.9) quantile) and
    the rest at random from its other items. When that quantile is 0 (for example a cluster of
    duplicates), a random 20 % of the cluster stands in for its outliers. What a cluster cannot give
    (too few outliers or too few other items) is passed on to the clusters after it; what no cluster can
    give is drawn at random from the rest of the pool. Noise items (HDBSCAN label -1) belong to no
    cluster, so only that last fill can pick them.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the fitted subsample when ``N > max_fit``, every random pick and the random 20 % split.
    logits_N_C : numpy.ndarray, shape (N, C)
        Logits of the pool items, the feature space HDBSCAN clusters.
    min_cluster_size, min_samples, max_fit : int
        As for :func:`select_outlier` (defaults 100, 1 and 20,000).

    Returns
    -------
    Selection
        Positions cluster by cluster (outliers, then regular items), then the pool fill, each with its
        GLOSH score. The order is the drawing order, not a priority.

    Notes
    -----
    While HDBSCAN finds no cluster, ``min_cluster_size`` is halved (never below 2) and the clustering
    refitted, at most ``MAX_HALVINGS`` (3) times; if there is still none, the whole pool is treated as
    one cluster (20 % from its GLOSH outliers, 80 % from the rest), and this is logged.

    References
    ----------
    .. [1] Campello et al. (2015), Hierarchical density estimates for data clustering, visualization,
           and outlier detection.
    """
    min_cluster_size, min_samples, max_fit = _check_hdbscan_options(min_cluster_size, min_samples, max_fit)
    n_pool = logits_N_C.shape[0]
    fit_rows = _fit_rows(n_pool, max_fit, rng)
    size = _effective_min_cluster_size(min_cluster_size, fit_rows.size)
    for halving in range(MAX_HALVINGS + 1):
        labels_N, glosh_N = hdbscan_glosh(logits_N_C, fit_rows, min_cluster_size=size, min_samples=min_samples)
        if (labels_N >= 0).any() or size == 2 or halving == MAX_HALVINGS:
            break
        size = max(2, size // 2)
    clusters = cluster_members(labels_N)
    if not clusters:
        log.info("HDBSCAN found no cluster down to min_cluster_size=%d; treating the pool as one cluster.", size)
        clusters = [np.arange(n_pool)]
    chosen = draw_from_clusters(clusters, glosh_N, min(n, n_pool), rng=rng)
    return Selection(chosen, glosh_N[chosen])


def cluster_members(labels_N: np.ndarray) -> list[np.ndarray]:
    """Pool positions of each cluster, clusters in increasing label order, noise (-1) left out."""
    order = np.argsort(labels_N, kind="stable")
    labels, starts = np.unique(labels_N[order], return_index=True)
    groups = np.split(order, starts[1:])
    return [group for label, group in zip(labels, groups) if label >= 0]


def split_outliers(members: np.ndarray, glosh_N: np.ndarray, *,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split one cluster into its outliers (GLOSH at or above its 0.9 quantile) and its other items.

    When the quantile is 0 or not finite, GLOSH cannot tell the two apart, and a random
    ``OUTLIER_PERCENT`` % of the cluster (rounded down) stands in for its outliers.
    """
    if members.size == 0:
        return members, members
    scores = glosh_N[members]
    threshold = np.quantile(scores, OUTLIER_QUANTILE)
    if np.isfinite(threshold) and threshold != 0:
        above = scores >= threshold
    else:
        above = np.zeros(members.size, dtype=bool)
        above[rng.choice(members.size, size=members.size * OUTLIER_PERCENT // 100, replace=False)] = True
    return members[above], members[~above]


def draw_from_clusters(clusters: list[np.ndarray], glosh_N: np.ndarray, n: int, *,
                       rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` pool positions: an even share per cluster, 20 % outliers and 80 % regular items in each.

    Parameters
    ----------
    clusters : list of numpy.ndarray
        Pool positions of each cluster, disjoint, in the order the shares are given out.
    glosh_N : numpy.ndarray, shape (N,)
        GLOSH score of every pool item.
    n : int
        Number of positions to draw, at most N.
    rng : numpy.random.Generator
        Every random draw.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Unique pool positions: cluster by cluster (outliers, then regular items), then the random fill
        from the rest of the pool.
    """
    share, carry = divmod(n, len(clusters))
    picked = []
    for index, members in enumerate(clusters):
        bonus = -(-carry // (len(clusters) - index))     # spread what is left over the remaining clusters
        carry -= bonus
        budget = share + bonus
        n_outliers = budget * OUTLIER_PERCENT // 100
        for group, wanted in zip(split_outliers(members, glosh_N, rng=rng), (n_outliers, budget - n_outliers)):
            taken = min(wanted, group.size)
            carry += wanted - taken
            picked.append(rng.choice(group, size=taken, replace=False))
    chosen = np.concatenate(picked).astype(np.int64)
    if chosen.size < n:
        rest = np.setdiff1d(np.arange(glosh_N.size), chosen, assume_unique=True)
        chosen = np.concatenate([chosen, rng.choice(rest, size=n - chosen.size, replace=False)])
    return chosen
