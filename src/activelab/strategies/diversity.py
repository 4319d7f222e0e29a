"""Batch diversity over embeddings: CoreSet (k-center greedy), BADGE (k-means++ seeding) and TypiClust.

All three spread a batch over the embedding space instead of ranking items one by one.

CoreSet and BADGE keep one running "squared distance to the nearest centre" vector of length N
(:class:`NearestCentre`) and update it from each new centre with one matrix-vector product over the
pool, ``|x|^2 - 2 x.c + |c|^2``, so no N x N (or M x N) matrix ever exists and a pick costs
``O(N * D)``. The work is done in the pool's own precision when it is float32 (the embeddings the loop
computes) or float64, without a copy; other dtypes are converted once (float16 to float32, integers to
float64). float64 is used only where accuracy needs it: the squared norms are accumulated in float64,
BADGE's cumulative ``D^2`` weights are summed in float64, and every distance within the expansion's
rounding error of 0 (``2 (D + 2) eps`` of ``|x|^2 + |c|^2``, ``eps`` of the working precision) is
recomputed exactly as ``sum((x - c)^2)`` in float64. So a duplicate of a centre is at distance exactly
0 and any other item at a positive distance, in either precision. Elsewhere a float32 distance is
within that bound of the exact one, so float32 and float64 pools pick the same items unless two
candidates' distances are that close (tested on well-separated data).

TypiClust and the HDBSCAN strategies (:mod:`activelab.strategies.outliers`) fit their clustering on at
most ``max_fit`` items (default :data:`DEFAULT_MAX_FIT`, 20,000) drawn with the strategy's ``rng`` and
place the rest in the fitted model, so their memory and fitting time do not grow with the pool.

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
#: Squared norms convert this many elements at a time to float64 (512 KiB, a cache-sized block).
NORM_BLOCK_ELEMENTS = 2**16
#: Largest number of items a clustering is fitted on (TypiClust's k-means and typicality, HDBSCAN); the
#: other items are placed in the fitted model. A strategy option (``max_fit``) overrides it.
DEFAULT_MAX_FIT = 20_000
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
    """Return ``|x|^2`` of every row in float64, converting blocks of :data:`NORM_BLOCK_ELEMENTS` at a time."""
    n_points, width = points_N_D.shape
    sq_N = np.empty(n_points)
    step = max(1, NORM_BLOCK_ELEMENTS // max(1, width))
    for start in range(0, n_points, step):
        rows = slice(start, start + step)
        block = np.asarray(points_N_D[rows], dtype=np.float64)
        sq_N[rows] = np.einsum("ij,ij->i", block, block)
    return sq_N


def working_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for float32 and narrower floats, float64 for everything else (integers included)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize <= 4 else np.dtype(np.float64)


class NearestCentre:
    """The squared Euclidean distance from every pool item to its nearest centre, updated centre by centre.

    Parameters
    ----------
    points_N_D : numpy.ndarray, shape (N, D)
        The pool. Used in place when it is C-contiguous float32 or float64, otherwise converted once
        (see :func:`working_dtype`).
    sq_norms_N : numpy.ndarray, shape (N,), optional
        ``squared_norms(points_N_D)`` (float64), passed by callers that need it themselves.

    Attributes
    ----------
    points : numpy.ndarray, shape (N, D)
        The pool in the working precision.
    nearest_N : numpy.ndarray, shape (N,)
        Squared distance to the nearest centre added so far (``inf`` before the first), in the working
        precision. Callers may overwrite entries (for example to mark chosen items); :meth:`add` only
        ever lowers them.

    Notes
    -----
    An update is ``nearest = min(nearest, |x|^2 + |c|^2 - 2 x.c)`` with one matrix-vector product per
    centre (a matrix product per block of centres). Values within the rounding bound of 0 are recomputed
    exactly in float64 (see the module docstring), so they are never negative, a duplicate of a centre
    gets exactly 0 and every other item a positive value.
    """

    def __init__(self, points_N_D: np.ndarray, sq_norms_N: np.ndarray | None = None):
        dtype = working_dtype(points_N_D.dtype)
        self.points = np.ascontiguousarray(points_N_D, dtype=dtype)
        n_points, width = self.points.shape
        sq_norms_N = squared_norms(self.points) if sq_norms_N is None else sq_norms_N
        self._sq_N = sq_norms_N.astype(dtype)
        self._sq_max = float(sq_norms_N.max(initial=0.0))
        self._bound = 2.0 * (width + 2) * float(np.finfo(dtype).eps)
        self._tiny = np.finfo(dtype).smallest_subnormal
        self.nearest_N = np.full(n_points, np.inf, dtype=dtype)

    def add(self, centres_K_D: np.ndarray) -> None:
        """Lower :attr:`nearest_N` to the squared distance to each of ``centres_K_D`` where it is closer."""
        n_centres, width = centres_K_D.shape
        if n_centres == 1:
            self._add_one(centres_K_D)
            return
        for cols in chunk_slices(n_centres, max(width, CENTRE_BLOCK)):
            given = np.asarray(centres_K_D[cols])
            scaled_D_K = np.ascontiguousarray(given, dtype=self.points.dtype).T * -2.0
            centre_sq = squared_norms(given)
            limits_K = (self._bound * (self._sq_max + centre_sq)).astype(self.points.dtype)
            centre_sq = centre_sq.astype(self.points.dtype)
            for rows in chunk_slices(self.points.shape[0], width + given.shape[0]):
                sq_B_K = self.points[rows] @ scaled_D_K
                sq_B_K += self._sq_N[rows, None]
                sq_B_K += centre_sq
                close_r, close_k = np.nonzero(sq_B_K <= limits_K)
                if close_r.size:
                    sq_B_K[close_r, close_k] = self._exact(close_r + rows.start, given, close_k)
                np.minimum(self.nearest_N[rows], sq_B_K.min(axis=1), out=self.nearest_N[rows])

    def _add_one(self, centre_1_D: np.ndarray) -> None:
        """One centre: a single matrix-vector product over the whole pool (``-2 c`` is exact in binary)."""
        given = np.asarray(centre_1_D)
        centre = np.asarray(given[0], dtype=np.float64)
        centre_sq = float(centre @ centre)
        sq_N = self.points @ (-2.0 * given[0]).astype(self.points.dtype)
        sq_N += self._sq_N
        sq_N += self.points.dtype.type(centre_sq)
        close = np.flatnonzero(sq_N <= self._bound * (self._sq_max + centre_sq))
        if close.size:
            sq_N[close] = self._exact(close, given, np.zeros(close.size, dtype=np.int64))
        np.minimum(self.nearest_N, sq_N, out=self.nearest_N)

    def _exact(self, positions: np.ndarray, centres_K_D: np.ndarray, centre_rows: np.ndarray) -> np.ndarray:
        """``sum((x - c)^2)`` in float64 for pool items ``positions`` against ``centres_K_D[centre_rows]``.

        Exactly 0 for a duplicate; a positive value is kept at least the smallest positive number of the
        working precision, so it cannot round to 0 there.
        """
        result = np.empty(positions.size)
        for part in chunk_slices(positions.size, self.points.shape[1]):
            diff = np.asarray(self.points[positions[part]], dtype=np.float64)
            diff -= np.asarray(centres_K_D[centre_rows[part]], dtype=np.float64)
            result[part] = np.einsum("ij,ij->i", diff, diff)
        return np.where(result > 0, np.maximum(result, self._tiny), 0.0)


def min_sq_distances(points_N_D: np.ndarray, centres_K_D: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance from each point to its nearest centre, without an N x K matrix.

    Parameters
    ----------
    points_N_D : numpy.ndarray, shape (N, D)
        Points (computed in float32 for float32 input, float64 otherwise; see :class:`NearestCentre`).
    centres_K_D : numpy.ndarray, shape (K, D)
        Centres, ``K >= 1``.

    Returns
    -------
    numpy.ndarray, shape (N,)
        ``min_k |x_i - c_k|^2`` as float64; exactly 0 for a point equal to a centre.

    Examples
    --------
    >>> min_sq_distances(np.array([[0.0], [1.0], [10.0]]), np.array([[0.0], [9.0]])).tolist()
    [0.0, 1.0, 1.0]
    """
    nearest = NearestCentre(points_N_D)
    nearest.add(centres_K_D)
    return nearest.nearest_N.astype(np.float64)


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
        Pool embeddings; float32 pools are worked on in float32 without a copy (see the module docstring).
    labelled_emb_M_D : numpy.ndarray, shape (M, D)
        Embeddings of the labelled items, the initial centres (``M`` may be 0).

    Returns
    -------
    Selection
        Positions in pick order; each score is the pick's Euclidean distance to its nearest centre at
        the time of the pick (non-increasing, computed in the working precision). Without labelled items
        the first pick is drawn uniformly with ``rng`` and scores NaN.

    Notes
    -----
    Ties for the largest distance go to the lowest pool position. A pool item equal to a labelled or
    chosen item is at distance exactly 0, so it is picked only once every distinct item is covered
    (then in position order); an item is never picked twice. Each pick costs one matrix-vector product
    over the pool; memory is a few vectors of length N plus bounded blocks for the labelled centres;
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
    centres = NearestCentre(emb_N_D)
    nearest_N = centres.nearest_N
    positions, scores = np.empty(n, np.int64), np.empty(n)
    if labelled_emb_M_D.shape[0]:
        centres.add(labelled_emb_M_D)
        start = 0
    else:
        positions[0], scores[0], start = rng.integers(n_pool), np.nan, 1
        centres.add(centres.points[positions[:1]])
        nearest_N[positions[0]] = -1.0
    for step in range(start, n):
        pick = int(np.argmax(nearest_N))
        positions[step], scores[step] = pick, np.sqrt(float(nearest_N[pick]))
        if step + 1 < n:
            centres.add(centres.points[pick:pick + 1])
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
        Source of the ``D^2`` draws: one ``rng.random()`` per centre after the first, inverted through
        the cumulative weights in pool order.
    grad_emb_N_D : numpy.ndarray, shape (N, D)
        Gradient embeddings of the last layer at the predicted label; float32 pools are worked on in
        float32 without a copy (see the module docstring).

    Returns
    -------
    Selection
        Positions in draw order. The first scores its gradient norm; every other its Euclidean distance
        to the nearest earlier centre when it was drawn.

    Notes
    -----
    Ties for the largest norm go to the lowest pool position. Items at distance 0 from a centre (the
    centres themselves and their duplicates) have probability 0; once every remaining item is at
    distance 0 the rest of the batch is drawn uniformly from the items not yet chosen. Each draw costs
    one matrix-vector product over the pool and a float64 cumulative sum of the N weights.

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
    pick = int(np.argmax(sq_norms_N))
    score = np.sqrt(sq_norms_N[pick])
    centres = NearestCentre(grad_emb_N_D, sq_norms_N)
    del sq_norms_N
    nearest_N = centres.nearest_N
    positions, scores = np.empty(n, np.int64), np.empty(n)
    chosen_N = np.zeros(n_pool, dtype=bool)
    for step in range(n):
        if step:
            cdf_N = np.cumsum(nearest_N, dtype=np.float64)
            if cdf_N[-1] > 0:
                pick = int(np.searchsorted(cdf_N, rng.random() * cdf_N[-1], side="right"))
            else:
                pick = int(rng.choice(np.flatnonzero(~chosen_N)))
            score = np.sqrt(float(nearest_N[pick]))
        positions[step], scores[step], chosen_N[pick] = pick, score, True
        if step + 1 < n:
            centres.add(centres.points[pick:pick + 1])
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
          max_clusters=500, max_fit=DEFAULT_MAX_FIT,
          description="the most typical item of each of the largest clusters that hold no labelled item")
def select_typiclust(n: int, *, rng: np.random.Generator, emb_N_D: np.ndarray, labelled_emb_M_D: np.ndarray,
                     max_clusters: int = 500, max_fit: int = DEFAULT_MAX_FIT) -> Selection:
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
    max_fit : int, default :data:`DEFAULT_MAX_FIT` (20,000)
        The bound that keeps big pools tractable. Up to ``max_fit`` pool and labelled items, k-means is
        fitted on all of them; above it, on ``max_fit`` of them drawn with ``rng``, and every item is
        then placed in its nearest centroid (``KMeans.predict``, in chunks). Typicality within a cluster
        larger than ``max_fit`` is likewise estimated on a subsample of this size. Memory is then
        ``O(max_fit * D)`` for the fits plus a few integer vectors of length N, whatever the pool size.

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
