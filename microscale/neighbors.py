"""Nearest neighbours, outlier scores and clusters of a mapped archive.

Two computations on top of the distance stage and the embedding:

- :func:`nearest_neighbors` streams the store's (n, n) distance matrix in row bands and
  keeps each image's ``k`` nearest other images (indices and distances). The full matrix
  is never held: a band is at most ``max_band_bytes`` (whole chunk rows when they fit), so
  10^5 images need a few hundred MiB, not 80 GB. Its last column is the outlier score.
- :func:`outlier_scores` is that k-th neighbour distance, the classic distance-based
  outlier score (Ramaswamy, Rastogi & Shim 2000): an image far from even its k-th most
  similar image is unlike anything else in the archive. ``k = 5`` by default: large
  enough that a small group of near-duplicates (a focus series, a repeated acquisition)
  does not hide an odd image, small enough that a genuine small cluster is not an outlier.
- :func:`clusters` labels a low-dimensional embedding with HDBSCAN (Campello, Moulavi &
  Sander 2013), which needs no number of clusters, finds clusters of any shape and
  density and calls points that belong to none noise (label ``-1``). It runs on the MDS
  coordinates (n, D*), so it scales to 10^5 images, unlike a precomputed (n, n) metric.

References
----------
.. [1] S. Ramaswamy, R. Rastogi, K. Shim, "Efficient algorithms for mining outliers from
   large data sets", SIGMOD 2000, :doi:`10.1145/342009.335437`.
.. [2] R. J. G. B. Campello, D. Moulavi, J. Sander, "Density-based clustering based on
   hierarchical density estimates", PAKDD 2013, :doi:`10.1007/978-3-642-37456-2_14`.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike

from microscale import store as _store
from microscale._validation import check_one_of
from microscale.store import LEVELS

__all__ = [
    "DEFAULT_K",
    "clusters",
    "knn_preservation",
    "matrix_name",
    "merge_nearest",
    "nearest_neighbors",
    "outlier_scores",
    "stored_neighbors",
]

#: Default number of neighbours kept per image (and the rank of the outlier score).
DEFAULT_K = 5

#: Default memory budget for one band of the distance matrix (256 MiB).
DEFAULT_BAND_BYTES = 256 * 2**20


def matrix_name(descriptor: str, *, level: str = "image") -> str:
    """The store array of a descriptor's distance matrix, e.g. ``"distances/cnn"``."""
    check_one_of(level, "level", LEVELS)
    return f"{'' if level == 'image' else 'tile_'}distances/{descriptor}"


def _band_rows(n: int, chunk: int, max_band_bytes: int) -> int:
    """Rows per band: whole chunks when a chunk row fits the budget, else fewer rows."""
    fit = max(1, int(max_band_bytes) // (8 * max(n, 1)))
    return (fit // chunk) * chunk if fit >= chunk else fit


def _band_neighbors(band: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of a (r, n) band, self excluded.

    Ties are broken by the lower column index, so the result is deterministic and equals a
    stable argsort of the row. NaN distances are never chosen.
    """
    r = band.shape[0]
    band = np.where(np.isnan(band), np.inf, band)
    band[np.arange(r), offset + np.arange(r)] = np.inf  # an image is not its own neighbour
    kth = np.partition(band, k - 1, axis=1)[:, k - 1]
    idx = np.empty((r, k), dtype=np.int64)
    dist = np.empty((r, k), dtype=np.float64)
    for i in range(r):
        cand = np.flatnonzero(band[i] <= kth[i])  # ascending index: ties keep index order
        order = cand[np.argsort(band[i, cand], kind="stable")[:k]]
        idx[i], dist[i] = order, band[i, order]
    return idx, dist


def nearest_neighbors(
    root: str | os.PathLike[str] | _store.Store,
    *,
    descriptor: str = "cnn",
    level: str = "image",
    k: int = DEFAULT_K,
    max_band_bytes: int = DEFAULT_BAND_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other images of every image, from the store's distance matrix.

    The (n, n) matrix ``distances/<descriptor>`` (``tile_distances/...`` at tile level) is
    read in row bands of whole chunks (fewer rows when a chunk row exceeds
    ``max_band_bytes``); only (n, k) results are kept.

    Parameters
    ----------
    root : path or Store
        A store whose distance stage is complete.
    descriptor : {"cnn", "ps"}, optional
    level : {"image", "tile"}, optional
    k : int, optional
        Neighbours per image, ``1 <= k < n`` (default 5).
    max_band_bytes : int, optional
        Memory budget of one band of float64 distances (default 256 MiB).

    Returns
    -------
    indices : (n, k) int64 ndarray
        Row indices of the neighbours, nearest first; ties go to the lower index. An
        image is never its own neighbour, but an exact duplicate (distance 0) is.
    distances : (n, k) float64 ndarray
        The matching distances, non-decreasing along each row.

    Examples
    --------
    >>> idx, dist = nearest_neighbors("store", descriptor="ps", k=5)  # doctest: +SKIP
    >>> score = dist[:, -1]  # the outlier score  # doctest: +SKIP
    """
    st = root if isinstance(root, _store.Store) else _store.open_store(root, mode="r")
    name = matrix_name(descriptor, level=level)
    if not _store.has_array(st, name):
        raise _store.StoreError(
            f"The store {st.root} has no {name!r}; run the distance stage "
            f"(run_distances(descriptor={descriptor!r}, level={level!r})) first."
        )
    n = _store.array_shape(st, name)[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n:
        raise ValueError(
            f"The 'k' parameter must be an int in [1, {n - 1}] for {n} {level}s. Got {k!r} instead."
        )
    if int(max_band_bytes) < 1:
        raise ValueError(
            f"The 'max_band_bytes' parameter must be a positive int. Got {max_band_bytes!r} "
            "instead."
        )
    rows = _band_rows(n, _store.array_chunks(st, name)[0], max_band_bytes)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        band = np.array(_store.read_rows(st, name, start, stop), dtype=np.float64)
        indices[start:stop], distances[start:stop] = _band_neighbors(band, start, int(k))
    return indices, distances


def merge_nearest(
    best_distances: np.ndarray,
    best_indices: np.ndarray,
    distances: np.ndarray,
    start: int = 0,
    *,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidates into running k-nearest lists: the k smallest (distance, index).

    The running lists hold, for each row, the ``k`` smallest (distance, index) pairs seen
    so far, in lexicographic order; the candidates are columns ``start .. start + c`` of
    the same rows (or have the column indices ``indices``). Whatever the order in which
    the columns of a matrix are merged, the result is, row by row, the first ``k``
    entries of a stable argsort of the whole row: the k nearest, ties to the lower index.
    NaN candidates are never chosen; empty slots are ``inf`` with index ``-1``.

    Parameters
    ----------
    best_distances : (r, k) float64 ndarray
    best_indices : (r, k) int64 ndarray
    distances : (r, c) float ndarray
        The candidates' distances (``inf`` to exclude one, e.g. a row's own column).
    start : int, optional
        Column index of the first candidate.
    indices : (r, c) int ndarray, optional
        The candidates' column indices, instead of ``start``: e.g. other running lists.

    Returns
    -------
    (r, k) float64 ndarray, (r, k) int64 ndarray
        The merged lists, nearest first.

    Examples
    --------
    >>> import numpy as np
    >>> d, i = np.full((1, 2), np.inf), np.full((1, 2), -1)
    >>> d, i = merge_nearest(d, i, np.array([[3.0, 1.0, 1.0]]), 0)
    >>> d, i = merge_nearest(d, i, np.array([[1.0, 0.5]]), 3)
    >>> i.tolist(), d.tolist()
    ([[4, 1]], [[0.5, 1.0]])
    """
    r, k = best_distances.shape
    c = distances.shape[1]
    with np.errstate(invalid="ignore"):
        hit = (distances <= best_distances[:, -1:]).any(axis=1)  # could enter some list
    if not hit.all():  # most rows, once their lists are good: nothing to do
        out_d, out_i = best_distances.copy(), best_indices.copy()
        if hit.any():
            sub = None if indices is None else np.asarray(indices)[hit]
            out_d[hit], out_i[hit] = merge_nearest(
                best_distances[hit], best_indices[hit], distances[hit], start, indices=sub
            )
        return out_d, out_i
    cat_d = np.concatenate([best_distances, np.asarray(distances, dtype=np.float64)], axis=1)
    np.copyto(cat_d, np.inf, where=np.isnan(cat_d))
    if indices is None:
        indices = np.broadcast_to(np.arange(start, start + c, dtype=np.int64), (r, c))
    cat_i = np.concatenate([best_indices, np.asarray(indices, dtype=np.int64)], axis=1)
    if c > 4 * k:  # cheap pre-selection: the k smallest values (any among equal ones)
        part = np.argpartition(cat_d, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(cat_d, part, axis=1).max(axis=1)
        ties = (cat_d <= kth[:, None]).sum(axis=1) > k
    else:
        part = np.broadcast_to(np.arange(k + c), (r, k + c))
        ties = np.ones(r, dtype=bool)
    sel_d = np.take_along_axis(cat_d, part, axis=1)
    sel_i = np.take_along_axis(cat_i, part, axis=1)
    order = np.lexsort((sel_i, sel_d), axis=1)[:, :k]
    out_d = np.take_along_axis(sel_d, order, axis=1)
    out_i = np.take_along_axis(sel_i, order, axis=1)
    for row in np.flatnonzero(ties):  # rows whose k-th value is shared: decide by index
        if part.shape[1] == k + c:  # already the whole row
            continue
        cand = np.flatnonzero(cat_d[row] <= out_d[row, -1])
        keep = cand[np.lexsort((cat_i[row, cand], cat_d[row, cand]))[:k]]
        out_d[row], out_i[row] = cat_d[row, keep], cat_i[row, keep]
    return out_d, out_i


def stored_neighbors(
    root: str | os.PathLike[str] | _store.Store,
    *,
    descriptor: str = "cnn",
    level: str = "image",
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of every row, as the streamed neighbour stage stored them.

    Reads ``neighbors/<descriptor>/index`` and ``.../distance`` (written by
    :func:`microscale.stages.knn.run_neighbors` in the ``"landmarks"`` distance mode) and
    keeps their first ``k`` columns: the same result as :func:`nearest_neighbors` on the
    full matrix, ties to the lower index.

    Returns
    -------
    indices : (n, k) int64 ndarray
    distances : (n, k) float64 ndarray
    """
    check_one_of(level, "level", LEVELS)
    st = root if isinstance(root, _store.Store) else _store.open_store(root, mode="r")
    prefix = "" if level == "image" else "tile_"
    name = f"{prefix}neighbors/{descriptor}"
    if not _store.has_array(st, f"{name}/index"):
        raise _store.StoreError(
            f"The store {st.root} has no {name!r}; run the neighbour stage "
            f"(run_neighbors(descriptor={descriptor!r}, level={level!r})) first."
        )
    idx = _store.read_array(st, f"{name}/index")
    dist = _store.read_array(st, f"{name}/distance")
    stored = idx.shape[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= stored:
        raise ValueError(
            f"The 'k' parameter must be an int in [1, {stored}]: the store keeps {stored} "
            f"neighbours per {level}. Got {k!r} instead; re-run the neighbour stage with a "
            "larger k."
        )
    return idx[:, :k].astype(np.int64), dist[:, :k]


def knn_preservation(indices: ArrayLike, embedding: ArrayLike) -> float:
    """Fraction of each point's k nearest neighbours that are also its k nearest in a map.

    The k-NN preservation of an embedding (Venna & Kaski's trustworthiness family): for
    every point, the share of its ``k`` nearest neighbours in the original distances
    (``indices``) that are among its ``k`` nearest in the embedding (exact, by a k-d
    tree; ties there to the lower index), averaged over the points. 1 is perfect, about
    ``k / n`` is chance.

    Parameters
    ----------
    indices : (n, k) array_like of int
        The true neighbours, e.g. from :func:`nearest_neighbors` or
        :func:`stored_neighbors`.
    embedding : (n, D) array_like

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> x = np.random.default_rng(0).normal(size=(30, 2))
    >>> D = cdist(x, x); np.fill_diagonal(D, np.inf)
    >>> knn_preservation(np.argsort(D, axis=1, kind="stable")[:, :3], x)
    1.0
    """
    from scipy.spatial import cKDTree

    idx = np.asarray(indices, dtype=np.int64)
    x = np.asarray(embedding, dtype=np.float64)
    if idx.ndim != 2 or x.ndim != 2 or len(idx) != len(x):
        raise ValueError(
            f"'indices' must be (n, k) and 'embedding' (n, D) for the same n. Got shapes "
            f"{idx.shape} and {x.shape} instead."
        )
    n, k = idx.shape
    _, near = cKDTree(x).query(x, k=min(k + 1, n))
    near = np.asarray(near).reshape(n, -1)
    is_self = near == np.arange(n)[:, None]  # itself: moved last (stable), then dropped
    near = np.take_along_axis(near, np.argsort(is_self, axis=1, kind="stable"), axis=1)[:, :k]
    hits = sum(int((near[:, [j]] == idx).any(axis=1).sum()) for j in range(near.shape[1]))
    return hits / (n * k)


def outlier_scores(distances: ArrayLike) -> np.ndarray:
    """Distance-based outlier score: the distance to the k-th nearest neighbour.

    Parameters
    ----------
    distances : (n, k) array_like
        Neighbour distances from :func:`nearest_neighbors`, nearest first.

    Returns
    -------
    (n,) float64 ndarray
        Larger is more unusual.
    """
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 2 or distances.shape[1] < 1:
        raise ValueError(
            f"The 'distances' array must be (n, k) with k >= 1. Got shape {distances.shape} "
            "instead; pass the second output of nearest_neighbors."
        )
    return distances[:, -1].copy()


def clusters(
    embedding: ArrayLike, *, min_cluster_size: int | None = None, min_samples: int | None = None
) -> np.ndarray:
    """HDBSCAN cluster labels of an embedding; ``-1`` is noise.

    Parameters
    ----------
    embedding : (n, D) array_like
        Low-dimensional coordinates (an MDS map).
    min_cluster_size : int, optional
        Smallest group called a cluster. Default ``max(2, min(10, n // 20))``: groups of
        5 % of a small archive, of 10 images in a large one.
    min_samples : int, optional
        Passed to :class:`sklearn.cluster.HDBSCAN` (default: ``min_cluster_size``).

    Returns
    -------
    (n,) int64 ndarray
        Labels ``0 .. n_clusters - 1`` numbered by decreasing size (ties by first
        member), ``-1`` for noise. All ``-1`` when ``n < 3``.
    """
    from sklearn.cluster import HDBSCAN

    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"The 'embedding' array must be (n, D). Got shape {x.shape} instead.")
    if not np.isfinite(x).all():
        raise ValueError(
            "The 'embedding' array holds NaN or infinite coordinates; pass the first "
            "n_components columns of a finite MDS map."
        )
    n = len(x)
    if min_cluster_size is None:
        min_cluster_size = max(2, min(10, n // 20))
    if min_cluster_size < 2:
        raise ValueError(
            f"The 'min_cluster_size' parameter must be an int >= 2. Got {min_cluster_size!r} "
            "instead."
        )
    if n < 3 or n < min_cluster_size:
        return np.full(n, -1, dtype=np.int64)
    raw = HDBSCAN(
        min_cluster_size=int(min_cluster_size),
        min_samples=None if min_samples is None else min(int(min_samples), n - 1),
        copy=True,
    ).fit_predict(x)
    return _relabel(raw)


def _relabel(raw: np.ndarray) -> np.ndarray:
    """Number clusters by decreasing size, then first member; keep -1."""
    out = np.full(len(raw), -1, dtype=np.int64)
    found = [c for c in np.unique(raw) if c >= 0]
    keyed = sorted(found, key=lambda c: (-(raw == c).sum(), int(np.argmax(raw == c))))
    for new, c in enumerate(keyed):
        out[raw == c] = new
    return out
