"""Batch diversity over embeddings: CoreSet (k-center greedy), BADGE (k-means++ seeding) and TypiClust.

All three spread a batch over the embedding space instead of ranking items one by one. Distances are
squared Euclidean, computed as ``|x|^2 - 2 x.c + |c|^2`` in float64 blocks of at most
:data:`~activelab.strategies.base.CHUNK_ELEMENTS` elements, so no N x N (or M x N) matrix ever
exists; a value within the expansion's rounding error (``4 * D * eps`` of ``|x|^2 + |c|^2``) is set to
exactly 0, so a duplicate of a centre is at distance 0, not at a tiny positive distance. CoreSet and
BADGE keep one running "distance to the nearest centre" vector of length N and update it from the new
centre only, ``O(N * D)`` per pick.

References
----------
.. [1] Sener, O. & Savarese, S. (2018). Active learning for convolutional neural networks: a core-set
       approach. ICLR.
.. [2] Ash, J. T., Zhang, C., Krishnamurthy, A., Langford, J. & Agarwal, A. (2020). Deep batch active
       learning by diverse, uncertain gradient lower bounds (BADGE). ICLR.
.. [3] Arthur, D. & Vassilvitskii, S. (2007). k-means++: the advantages of careful seeding. SODA.
.. [4] Hacohen, G., Dekel, A. & Weinshall, D. (2022). Active learning on a budget: opposite strategies
       suit high and low budgets (TypiClust). ICML.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors

from activelab.errors import ConfigError
from activelab.strategies.base import Selection, chunk_slices, register
from activelab.validation import check_int

SENER = "Sener & Savarese 2018"
ASH = "Ash et al. 2020"
HACOHEN = "Hacohen, Dekel & Weinshall 2022"

#: Centres are handled in blocks of at most this many rows (fewer when ``D`` is large).
CENTRE_BLOCK = 1024
#: TypiClust: neighbours in the typicality estimate, and the size at or below which a cluster is used
#: only once every larger cluster is exhausted (both as in the authors' code).
TYPICALITY_NEIGHBOURS = 20
SMALL_CLUSTER = 5
#: TypiClust clusters with exact k-means up to this many clusters, mini-batch k-means above (as the authors).
EXACT_KMEANS_CLUSTERS = 50


def _empty() -> Selection:
    return Selection(np.empty(0, np.int64), np.empty(0))


def _check_width(emb_N_D: np.ndarray, labelled_emb_M_D: np.ndarray) -> None:
    if labelled_emb_M_D.shape[0] and labelled_emb_M_D.shape[1] != emb_N_D.shape[1]:
        raise ConfigError(f"`labelled_emb_M_D` has width {labelled_emb_M_D.shape[1]} but `emb_N_D` has width "
                          f"{emb_N_D.shape[1]}; both must come from the same layer.")


def squared_norms(points_N_D: np.ndarray) -> np.ndarray:
    """Return ``|x|^2`` of every row in float64, computed in bounded chunks."""
    n_points, width = points_N_D.shape
    sq_N = np.empty(n_points)
    for rows in chunk_slices(n_points, width):
        block = np.asarray(points_N_D[rows], dtype=np.float64)
        sq_N[rows] = np.einsum("ij,ij->i", block, block)
    return sq_N


def min_sq_distances(points_N_D: np.ndarray, centres_K_D: np.ndarray,
                     sq_norms_N: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distance from each point to its nearest centre, without an N x K matrix.

    Parameters
    ----------
    points_N_D : numpy.ndarray, shape (N, D)
        Points (any float or integer dtype; blocks are converted to float64).
    centres_K_D : numpy.ndarray, shape (K, D)
        Centres, ``K >= 1``.
    sq_norms_N : numpy.ndarray, shape (N,), optional
        ``squared_norms(points_N_D)``, passed by callers that reuse it across many calls.

    Returns
    -------
    numpy.ndarray, shape (N,)
        ``min_k |x_i - c_k|^2`` in float64; exactly 0 for a point equal to a centre.

    Examples
    --------
    >>> min_sq_distances(np.array([[0.0], [1.0], [10.0]]), np.array([[0.0], [9.0]])).tolist()
    [0.0, 1.0, 1.0]
    """
    n_points, width = points_N_D.shape
    if sq_norms_N is None:
        sq_norms_N = squared_norms(points_N_D)
    tolerance = 4.0 * max(width, 1) * np.finfo(np.float64).eps
    best_N = np.full(n_points, np.inf)
    for cols in chunk_slices(centres_K_D.shape[0], max(width, CENTRE_BLOCK)):
        centres = np.asarray(centres_K_D[cols], dtype=np.float64)
        centre_sq = np.einsum("ij,ij->i", centres, centres)
        for rows in chunk_slices(n_points, width + centres.shape[0]):
            block = np.asarray(points_N_D[rows], dtype=np.float64)
            norms_B_K = sq_norms_N[rows, None] + centre_sq[None, :]
            sq_B_K = norms_B_K - 2.0 * (block @ centres.T)
            sq_B_K[sq_B_K <= tolerance * norms_B_K] = 0.0
            best_N[rows] = np.minimum(best_N[rows], sq_B_K.min(axis=1))
    return best_N


@register("coreset", needs=("emb_N_D", "labelled_emb_M_D"), family="diversity", reference=SENER,
          description="k-center greedy: each pick is the pool item farthest from the labelled and chosen items")
def select_coreset(n: int, *, rng: np.random.Generator, emb_N_D: np.ndarray,
                   labelled_emb_M_D: np.ndarray) -> Selection:
    """Choose a batch by k-center greedy, the 2-approximation of the minimax cover of the pool.

    Each pick is the pool item whose distance to its nearest centre (labelled items and items already
    picked) is largest; that distance then shrinks for every item near the new centre.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Draws the first centre when there are no labelled items; otherwise unused.
    emb_N_D : numpy.ndarray, shape (N, D)
        Pool embeddings.
    labelled_emb_M_D : numpy.ndarray, shape (M, D)
        Embeddings of the labelled items, the initial centres (``M`` may be 0).

    Returns
    -------
    Selection
        Positions in pick order; each score is the pick's Euclidean distance to its nearest centre at
        the time of the pick (non-increasing). Without labelled items the first pick is drawn uniformly
        with ``rng`` and scores NaN.

    Notes
    -----
    Ties for the largest distance go to the lowest pool position. A pool item equal to a labelled or
    chosen item is at distance exactly 0, so it is picked only once every distinct item is covered
    (then in position order); an item is never picked twice. Memory is ``O(N)`` plus bounded blocks;
    time is ``O((M + n) * N * D)``.

    References
    ----------
    .. [1] Sener & Savarese (2018), Active learning for convolutional neural networks: a core-set approach.
    """
    n_pool = emb_N_D.shape[0]
    n = min(n, n_pool)
    if n == 0:
        return _empty()
    _check_width(emb_N_D, labelled_emb_M_D)
    sq_norms_N = squared_norms(emb_N_D)
    positions, scores = np.empty(n, np.int64), np.empty(n)
    if labelled_emb_M_D.shape[0]:
        nearest_N, start = min_sq_distances(emb_N_D, labelled_emb_M_D, sq_norms_N), 0
    else:
        positions[0], scores[0], start = rng.integers(n_pool), np.nan, 1
        nearest_N = min_sq_distances(emb_N_D, emb_N_D[positions[:1]], sq_norms_N)
        nearest_N[positions[0]] = -1.0
    for step in range(start, n):
        pick = int(np.argmax(nearest_N))
        positions[step], scores[step] = pick, np.sqrt(max(nearest_N[pick], 0.0))
        if step + 1 < n:
            np.minimum(nearest_N, min_sq_distances(emb_N_D, emb_N_D[pick:pick + 1], sq_norms_N), out=nearest_N)
        # Chosen items sit below every real distance, so argmax never returns them again.
        nearest_N[pick] = -1.0
    return Selection(positions, scores)


@register("badge", needs=("grad_emb_N_D",), family="diversity", reference=ASH,
          description="k-means++ seeding over gradient embeddings: large and diverse expected gradients")
def select_badge(n: int, *, rng: np.random.Generator, grad_emb_N_D: np.ndarray) -> Selection:
    """Choose a batch by k-means++ seeding over the BADGE gradient embeddings.

    The first centre is the item with the largest gradient norm, as in the authors' code; every next
    centre is drawn with probability proportional to its squared distance to the nearest centre so far
    (``D^2`` sampling), which favours items that are both uncertain (long gradients) and different.

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Source of the ``D^2`` draws.
    grad_emb_N_D : numpy.ndarray, shape (N, D)
        Gradient embeddings of the last layer at the predicted label.

    Returns
    -------
    Selection
        Positions in draw order. The first scores its gradient norm; every other its Euclidean distance
        to the nearest earlier centre when it was drawn.

    Notes
    -----
    Ties for the largest norm go to the lowest pool position. Items at distance 0 from a centre (the
    centres themselves and their duplicates) have probability 0; once every remaining item is at
    distance 0 the rest of the batch is drawn uniformly from the items not yet chosen.

    References
    ----------
    .. [1] Ash et al. (2020), Deep batch active learning by diverse, uncertain gradient lower bounds.
    .. [2] Arthur & Vassilvitskii (2007), k-means++: the advantages of careful seeding.
    """
    n_pool = grad_emb_N_D.shape[0]
    n = min(n, n_pool)
    if n == 0:
        return _empty()
    sq_norms_N = squared_norms(grad_emb_N_D)
    positions, scores = np.empty(n, np.int64), np.empty(n)
    chosen_N = np.zeros(n_pool, dtype=bool)
    nearest_N = np.full(n_pool, np.inf)
    pick, score = int(np.argmax(sq_norms_N)), np.sqrt(sq_norms_N.max())
    for step in range(n):
        if step:
            cdf_N = np.cumsum(nearest_N)
            if cdf_N[-1] > 0:
                pick = int(np.searchsorted(cdf_N, rng.random() * cdf_N[-1], side="right"))
            else:
                pick = int(rng.choice(np.flatnonzero(~chosen_N)))
            score = np.sqrt(nearest_N[pick])
        positions[step], scores[step], chosen_N[pick] = pick, score, True
        if step + 1 < n:
            np.minimum(nearest_N, min_sq_distances(grad_emb_N_D, grad_emb_N_D[pick:pick + 1], sq_norms_N),
                       out=nearest_N)
            nearest_N[chosen_N] = 0.0
    return Selection(positions, scores)


def typicality(points_S_D: np.ndarray) -> np.ndarray:
    """Inverse mean distance of each point to its ``K = min(20, S - 1)`` nearest other points.

    Uses :class:`sklearn.neighbors.NearestNeighbors` (no S x S matrix). A point whose K neighbours all
    coincide with it is infinitely typical (``inf``); a lone point has no neighbours and scores 0.
    """
    n_points = points_S_D.shape[0]
    neighbours = min(TYPICALITY_NEIGHBOURS, n_points - 1)
    if neighbours == 0:
        return np.zeros(n_points)
    distances_S_K, _ = NearestNeighbors(n_neighbors=neighbours).fit(points_S_D).kneighbors()
    mean_S = distances_S_K.mean(axis=1)
    return np.divide(1.0, mean_S, out=np.full(n_points, np.inf), where=mean_S > 0)


def _kmeans_labels(emb_N_D: np.ndarray, labelled_emb_M_D: np.ndarray, n_clusters: int, max_fit: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cluster pool and labelled items together; fit on at most ``max_fit`` of them drawn with ``rng``."""
    n_pool, n_labelled = emb_N_D.shape[0], labelled_emb_M_D.shape[0]
    n_total = n_pool + n_labelled
    fit_rows = np.arange(n_total) if n_total <= max_fit else np.sort(rng.choice(n_total, max_fit, replace=False))
    in_pool = fit_rows < n_pool
    fit_X = np.concatenate([np.asarray(emb_N_D[fit_rows[in_pool]], dtype=np.float64),
                            np.asarray(labelled_emb_M_D[fit_rows[~in_pool] - n_pool], dtype=np.float64)])
    n_clusters = min(n_clusters, fit_X.shape[0])
    kind = KMeans if n_clusters <= EXACT_KMEANS_CLUSTERS else MiniBatchKMeans
    model = kind(n_clusters=n_clusters, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        # Fewer distinct points than clusters (duplicates) leaves clusters empty; they are never eligible.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(fit_X)

    def predict(points: np.ndarray) -> np.ndarray:
        labels = np.empty(points.shape[0], dtype=np.int64)
        for rows in chunk_slices(points.shape[0], points.shape[1] + n_clusters):
            labels[rows] = model.predict(np.asarray(points[rows], dtype=np.float64))
        return labels

    return predict(emb_N_D), predict(labelled_emb_M_D)


@register("typiclust", needs=("emb_N_D", "labelled_emb_M_D"), family="diversity", reference=HACOHEN,
          max_clusters=500, max_fit=20000,
          description="the most typical item of each of the largest clusters that hold no labelled item")
def select_typiclust(n: int, *, rng: np.random.Generator, emb_N_D: np.ndarray, labelled_emb_M_D: np.ndarray,
                     max_clusters: int = 500, max_fit: int = 20000) -> Selection:
    """Choose the most typical item of the largest uncovered clusters (TypiClust, TPC-RP).

    Pool and labelled embeddings are clustered together by k-means into ``min(M + n, max_clusters)``
    clusters. Each pick takes the cluster with the fewest labelled-or-chosen items, then the largest,
    then the lowest cluster index, and from it the not-yet-chosen pool item of highest typicality (the
    inverse mean distance to its ``min(20, size - 1)`` nearest neighbours among the cluster's
    unchosen pool items).

    Parameters
    ----------
    n : int
        Batch size; ``min(n, N)`` items are returned.
    rng : numpy.random.Generator
        Seeds k-means and draws the subsamples.
    emb_N_D : numpy.ndarray, shape (N, D)
        Pool embeddings.
    labelled_emb_M_D : numpy.ndarray, shape (M, D)
        Embeddings of the labelled items (``M`` may be 0).
    max_clusters : int, default 500
        Cap on the number of clusters (the authors' ``MAX_NUM_CLUSTERS``).
    max_fit : int, default 20000
        k-means is fitted on at most this many items drawn with ``rng`` (then predicts every item, in
        chunks); typicality within a larger cluster is estimated on a subsample of this size.

    Returns
    -------
    Selection
        Positions in pick order; each score is the pick's typicality (``inf`` for an item whose
        neighbours coincide with it, 0 for the only item of its cluster).

    Notes
    -----
    As in the authors' code, clusters of at most 5 items are used only when no larger cluster has an
    unchosen item, and exact k-means is used up to 50 clusters, mini-batch k-means above. Unlike it,
    duplicates, one-item clusters and clusters that run out of items are handled instead of crashing,
    and a cluster's typicality ranking is computed once and consumed in order rather than recomputed
    after every pick (it is recomputed, on the remaining items, only if a subsampled ranking runs out).
    Ties in typicality go to the lowest pool position.

    References
    ----------
    .. [1] Hacohen, Dekel & Weinshall (2022), Active learning on a budget: opposite strategies suit
           high and low budgets.
    """
    max_clusters = check_int(max_clusters, "max_clusters", minimum=1)
    max_fit = check_int(max_fit, "max_fit", minimum=2)
    n_pool = emb_N_D.shape[0]
    n = min(n, n_pool)
    if n == 0:
        return _empty()
    _check_width(emb_N_D, labelled_emb_M_D)
    n_labelled = labelled_emb_M_D.shape[0]
    pool_labels, labelled_labels = _kmeans_labels(emb_N_D, labelled_emb_M_D, min(n_labelled + n, max_clusters),
                                                  max_fit, rng)
    n_clusters = int(max(pool_labels.max(), labelled_labels.max(initial=-1))) + 1
    unchosen_K = np.bincount(pool_labels, minlength=n_clusters)
    covered_K = np.bincount(labelled_labels, minlength=n_clusters)
    size_K = unchosen_K + covered_K
    small_K = size_K <= SMALL_CLUSTER
    by_cluster = np.argsort(pool_labels, kind="stable")
    members = np.split(by_cluster, np.cumsum(unchosen_K)[:-1])
    chosen_N = np.zeros(n_pool, dtype=bool)
    ranked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    positions, scores = np.empty(n, np.int64), np.empty(n)
    for step in range(n):
        eligible = np.flatnonzero(unchosen_K > 0)
        cluster = int(eligible[np.lexsort((eligible, -size_K[eligible], covered_K[eligible], small_K[eligible]))[0]])
        if cluster not in ranked or not ranked[cluster][0].size:
            ranked[cluster] = _rank_by_typicality(emb_N_D, members[cluster][~chosen_N[members[cluster]]],
                                                  max_fit, rng)
        order, typical = ranked[cluster]
        positions[step], scores[step] = order[0], typical[0]
        ranked[cluster] = (order[1:], typical[1:])
        chosen_N[order[0]] = True
        unchosen_K[cluster] -= 1
        covered_K[cluster] += 1
    return Selection(positions, scores)


def _rank_by_typicality(emb_N_D: np.ndarray, candidates: np.ndarray, max_fit: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions of one cluster by decreasing typicality (ties by position), with the values."""
    if candidates.size > max_fit:
        candidates = np.sort(rng.choice(candidates, max_fit, replace=False))
    values = typicality(np.asarray(emb_N_D[candidates], dtype=np.float64))
    order = np.argsort(-values, kind="stable")
    return candidates[order], values[order]
