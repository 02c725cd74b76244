"""Landmark MDS: embed ``m`` landmarks, place every other point against them.

Beyond what a dense ``(n, n)`` matrix allows, :func:`landmark_mds` embeds ``m`` landmarks
(picked by :func:`choose_landmarks`) by metric MDS (:mod:`microscale.metric_mds`) and
places every other point out of sample (:func:`out_of_sample`), from its distances to the
landmarks only; :func:`microscale.metric_mds.stress_from_rows` then reports the stress of
the full matrix from row blocks.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist

from microscale._validation import check_positive_int
from microscale.metric_mds import (
    check_configuration,
    check_distances,
    check_n_components,
    check_rows,
    classical_mds,
    mds_with_info,
    to_numpy,
)

__all__ = ["choose_landmarks", "landmark_mds", "out_of_sample"]

# Rows per block in the out-of-sample placement (bounds the (rows, m) temporaries).
_PLACE_BLOCK = 4096


def _place(
    R: np.ndarray,
    L: np.ndarray,
    w: np.ndarray,
    Y: np.ndarray,
    delta_mean: np.ndarray,
    n_refine: int,
) -> np.ndarray:
    """Triangulate the rows of R (r, m) against the landmarks, then refine them.

    L (m, k) are the landmarks' classical-MDS coordinates (eigenvalues w), Y (m, k) their
    final (SMACOF) coordinates. The start is de Silva & Tenenbaum's
    x = -1/2 L# (r_i**2 - delta_mean), L#' = L / w, carried into Y's frame by the affine
    map that best takes L to Y (least squares over the landmarks). Each refinement step is
    the Guttman transform of the point's own stress sum_j (r_ij - |x - y_j|)**2 with the
    landmarks fixed: x <- mean_j y_j + (x sum_j b_j - sum_j b_j y_j) / m, with
    b_j = r_ij / |x - y_j| (0 where x = y_j). It never increases that stress.
    """
    m = Y.shape[0]
    pinv_t = L / np.where(w > 0, w, np.inf)  # (m, k): L#, the pseudo-inverse transpose
    A, *_ = np.linalg.lstsq(np.column_stack([L, np.ones(m)]), Y, rcond=None)
    out = np.empty((R.shape[0], Y.shape[1]))
    for start in range(0, R.shape[0], _PLACE_BLOCK):
        Rb = R[start : start + _PLACE_BLOCK]
        X = -0.5 * (np.square(Rb) - delta_mean) @ pinv_t
        X = X @ A[:-1] + A[-1]
        out[start : start + _PLACE_BLOCK] = _refine(Rb, X, Y, n_refine)
    return out


def _refine(R: np.ndarray, X: np.ndarray, Y: np.ndarray, n_refine: int) -> np.ndarray:
    """Up to ``n_refine`` Guttman steps of the rows of X on their own stress against Y.

    x <- mean_j y_j + (x sum_j b_j - sum_j b_j y_j) / m, with b_j = r_j / |x - y_j| (0
    where x = y_j); stops once no row moves by more than 1e-10 of Y's scale.
    """
    m = Y.shape[0]
    y_mean = Y.mean(axis=0)
    tol = 1e-10 * float(np.abs(Y).max())  # stop once no point moves more than this
    for _ in range(n_refine):
        H = cdist(X, Y)
        B = np.divide(R, H, out=np.zeros_like(H), where=H > 0)
        X_new = y_mean + (X * B.sum(axis=1, keepdims=True) - B @ Y) / m
        done = np.abs(X_new - X).max() <= tol
        X = X_new
        if done:
            break
    return X


def landmark_mds(
    D_landmarks: ArrayLike | torch.Tensor,
    D_rest: ArrayLike | torch.Tensor,
    n_components: int,
    *,
    landmarks: ArrayLike | None = None,
    n_refine: int = 50,
    max_iter: int = 300,
    eps: float = 1e-6,
    random_state: int | np.random.Generator | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Landmark MDS: SMACOF on ``m`` landmarks, every other point placed out of sample.

    For ``n`` beyond what a dense ``(n, n)`` matrix allows. Only the distances among the
    landmarks and from every point to the landmarks are needed, ``O(n m)`` memory:

    1. the landmarks are embedded by :func:`mds` (classical MDS, then SMACOF);
    2. every other point is placed by the triangulation of de Silva & Tenenbaum (2004),
       ``x = -1/2 L# (delta - delta_mean)``, with ``delta`` its squared distances to the
       landmarks, ``delta_mean`` the column means of the landmarks' squared distances and
       ``L#`` the pseudo-inverse transpose of the (centred) landmark coordinates ``L``.
       With ``L`` the classical-MDS coordinates this is exactly their formula; here ``L``
       is the SMACOF embedding, and for exactly Euclidean distances it still recovers
       every point;
    3. each placed point is then refined by up to ``n_refine`` majorization (Guttman) steps on
       its own stress ``sum_j (delta_j**0.5 - |x - l_j|)**2`` against the fixed landmarks,
       which never increase it; the steps are vectorised over the points.

    The price of the approximation is the stress of the full matrix: compute it block-wise
    with :func:`stress_from_rows`, without ever holding ``(n, n)``.

    Parameters
    ----------
    D_landmarks : (m, m) array_like or torch.Tensor
        Distances among the landmarks: symmetric, non-negative, zero diagonal.
    D_rest : (r, m) array_like or torch.Tensor
        Distances from points to the landmarks, columns in the order of ``D_landmarks``.
        Without ``landmarks``: the ``r = n - m`` other points. With ``landmarks``: every
        point, ``r = n`` (the landmark rows are then not used for placement).
    n_components : int
        Embedding dimension, ``1 <= n_components < m``.
    landmarks : (m,) array_like of int, optional
        Row indices of the landmarks in ``D_rest`` (e.g. from :func:`choose_landmarks`).
    n_refine : int, default 50
        Most refinement steps per placed point (they stop early once no point of a block
        of 4096 moves by more than 1e-10 of the landmark scale); 0 keeps the bare
        triangulation. Placing the landmarks themselves this way returns their own
        coordinates, to the precision of their SMACOF convergence.
    max_iter, eps : int, float
        SMACOF settings for the landmarks, as in :func:`mds`.
    random_state : int or numpy.random.Generator, optional
        Passed to :func:`mds` (random values for clipped classical-MDS dimensions).
    device : str, optional
        Torch device for the landmark SMACOF; default CUDA when available, else CPU. The
        placement is numpy work on the host.

    Returns
    -------
    X : (n, n_components) ndarray of float64
        Without ``landmarks``: the ``m`` landmarks first, then the rows of ``D_rest`` in
        order (``n = m + r``). With ``landmarks``: one row per row of ``D_rest``, the
        landmark rows holding their SMACOF coordinates. Centred on the landmarks.

    Raises
    ------
    ValueError
        If the distances are not valid, the shapes do not agree, or ``landmarks`` are not
        ``m`` distinct row indices of ``D_rest``.

    References
    ----------
    .. [1] V. de Silva and J. B. Tenenbaum, "Sparse multidimensional scaling using landmark
       points", Technical report, Stanford University (2004).
    .. [2] V. de Silva and J. B. Tenenbaum, "Global versus local methods in nonlinear
       dimensionality reduction", NIPS 15, 721-728 (2003).
    .. [3] I. Borg and P. J. F. Groenen, Modern Multidimensional Scaling, 2nd ed.,
       Springer (2005), ch. 8. doi:10.1007/0-387-28981-X

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> from microscale.metric_mds import stress_from_rows
    >>> points = np.random.default_rng(0).normal(size=(500, 3))
    >>> idx = choose_landmarks(500, 50, random_state=0)
    >>> D_rest = cdist(points, points[idx])
    >>> X = landmark_mds(D_rest[idx], D_rest, 3, landmarks=idx, device="cpu")
    >>> X.shape
    (500, 3)
    >>> stress_from_rows(lambda i0, i1: cdist(points[i0:i1], points), X) < 1e-6
    True
    """
    DL = check_distances(D_landmarks)
    m = DL.shape[0]
    k = check_n_components(n_components, m)
    R = check_rows(D_rest, m, "D_rest")
    if isinstance(n_refine, bool) or not isinstance(n_refine, numbers.Integral) or n_refine < 0:
        raise ValueError(
            f"The 'n_refine' parameter must be a non-negative int. Got {n_refine!r} instead."
        )
    idx = None
    if landmarks is not None:
        idx = np.asarray(landmarks)
        if idx.ndim != 1 or idx.shape[0] != m or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"The 'landmarks' parameter must be {m} integer row indices of 'D_rest', one "
                f"per landmark. Got shape {idx.shape} and dtype {idx.dtype} instead."
            )
        if idx.min() < 0 or idx.max() >= R.shape[0] or np.unique(idx).size != m:
            raise ValueError(
                f"The 'landmarks' parameter must hold {m} distinct indices in [0, "
                f"{R.shape[0]}), the rows of 'D_rest'. Got duplicates or indices out of range."
            )
    fit = mds_with_info(
        DL,
        k,
        max_iter=max_iter,
        eps=eps,
        random_state=random_state,
        device=device,
    )
    Y, info = fit.embeddings[k], fit.info[k]
    Y = Y - Y.mean(axis=0)
    L = classical_mds(DL, k, device=device)
    w = info.eigenvalues
    delta_mean = np.square(DL).mean(axis=0)
    if idx is None:
        return np.vstack([Y, _place(R, L, w, Y, delta_mean, int(n_refine))])
    rest = np.ones(R.shape[0], dtype=bool)
    rest[idx] = False
    X = np.empty((R.shape[0], k))
    X[idx] = Y
    X[rest] = _place(R[rest], L, w, Y, delta_mean, int(n_refine))
    return X


def out_of_sample(
    R: ArrayLike | torch.Tensor,
    X: ArrayLike | torch.Tensor,
    *,
    delta_mean: ArrayLike | None = None,
    n_refine: int = 50,
) -> np.ndarray:
    """Place new points into an existing embedding, without recomputing it.

    Each new point is placed from its distances to the ``n`` embedded points, which stay
    fixed, as :func:`landmark_mds` places its non-landmarks (every embedded point acting as
    a landmark):

    1. de Silva & Tenenbaum's triangulation ``x = -1/2 L# (delta - delta_mean)``, with
       ``delta`` the point's squared distances and ``L`` the embedding in its principal
       axes (``L = (X - mean) V`` from the SVD of the centred ``X``, so that ``L' L`` is
       diagonal and ``L#`` is ``L`` divided by those diagonal entries), carried back into
       ``X``'s frame. For exactly Euclidean distances in ``n_components`` dimensions this
       recovers the point exactly;
    2. up to ``n_refine`` Guttman (majorization) steps on the point's own stress
       ``sum_j (r_j - |x - x_j|)**2`` against all ``n`` fixed points, which never
       increase it. That stress has several local minima (many in one dimension), so the
       steps are also run from a second start, the point's nearest embedded point, and
       the placement with the lower stress is kept. On an embedding that SMACOF has
       converged, a point of the embedding is a fixed point of these steps, so placing an
       embedded point's own distances returns (close to) its coordinates.

    Memory is ``O(n * n_components)`` plus a few ``(4096, n)`` blocks of rows of ``R``.

    Parameters
    ----------
    R : (r, n) array_like or torch.Tensor
        Distances from each new point to the ``n`` embedded points, in the order of ``X``.
    X : (n, n_components) array_like or torch.Tensor
        The embedding (e.g. from :func:`mds`).
    delta_mean : (n,) array_like, optional
        Column means of the squared distances among the embedded points,
        ``mean_i d_ij**2``, as in de Silva & Tenenbaum. Default: those of the embedding's
        own distances, ``mean_i |x_i - x_j|**2`` (equal when the embedding fits the
        distances exactly); pass the true ones when they are known (for vectors ``f``
        with mean ``c``: ``mean_i |f_i - c|**2 + |f_j - c|**2``).
    n_refine : int, default 50
        Most refinement steps (they stop once no point of a block moves by more than
        1e-10 of the embedding's scale); 0 returns the bare triangulation. The result's
        stress is never above the triangulation's.

    Returns
    -------
    (r, n_components) ndarray of float64

    Raises
    ------
    ValueError
        If the distances or coordinates are not finite, the shapes do not agree, or
        ``n_refine`` is negative.

    References
    ----------
    .. [1] V. de Silva and J. B. Tenenbaum, "Sparse multidimensional scaling using landmark
       points", Technical report, Stanford University (2004).
    .. [2] I. Borg and P. J. F. Groenen, Modern Multidimensional Scaling, 2nd ed.,
       Springer (2005), ch. 8. doi:10.1007/0-387-28981-X

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(50, 2))
    >>> new = np.array([[0.5, -0.25]])
    >>> np.round(out_of_sample(cdist(new, points), points), 6)
    array([[ 0.5 , -0.25]])
    """
    X = to_numpy(X)
    if X.ndim != 2:
        raise ValueError(
            f"The 'X' array must be 2-D, of shape (n_points, n_components). Got shape "
            f"{X.shape} instead."
        )
    n = X.shape[0]
    X = check_configuration(X, n, "X")
    R = check_rows(R, n, "R")
    if isinstance(n_refine, bool) or not isinstance(n_refine, numbers.Integral) or n_refine < 0:
        raise ValueError(
            f"The 'n_refine' parameter must be a non-negative int. Got {n_refine!r} instead."
        )
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    L = Xc @ Vt.T  # principal axes: L' L = diag(s**2)
    if delta_mean is None:
        sq = np.einsum("ij,ij->i", Xc, Xc)
        dm = sq.mean() + sq
    else:
        dm = np.asarray(delta_mean, dtype=np.float64)
        if dm.shape != (n,) or not np.isfinite(dm).all() or (dm < 0).any():
            raise ValueError(
                f"The 'delta_mean' array must hold {n} finite, non-negative numbers, one per "
                f"embedded point. Got shape {dm.shape} instead."
                if dm.shape != (n,)
                else "The 'delta_mean' array must be finite and non-negative."
            )
    placed = _place(R, L, np.square(s), X, dm, int(n_refine))
    if n_refine == 0:
        return placed
    # A second start at each point's nearest embedded point: the point's own stress is
    # multimodal (in 1-D above all), and the triangulation may start in a worse basin.
    for start in range(0, R.shape[0], _PLACE_BLOCK):
        Rb = R[start : start + _PLACE_BLOCK]
        near = _refine(Rb, X[np.argmin(Rb, axis=1)], X, int(n_refine))
        tri = placed[start : start + _PLACE_BLOCK]
        better = _own_stress(Rb, near, X) < _own_stress(Rb, tri, X)
        tri[better] = near[better]
    return placed


def _own_stress(R: np.ndarray, P: np.ndarray, X: np.ndarray) -> np.ndarray:
    """sum_j (r_ij - |p_i - x_j|)**2 for each row."""
    diff = cdist(P, X) - R
    return np.einsum("ij,ij->i", diff, diff)


def choose_landmarks(
    n: int,
    m: int,
    *,
    random_state: int | np.random.Generator | None = None,
    D_fn: Callable[[int], ArrayLike] | None = None,
) -> np.ndarray:
    """Pick ``m`` of ``n`` points as landmarks for :func:`landmark_mds`.

    Without ``D_fn``: ``m`` distinct points uniformly at random. With ``D_fn``: MaxMin
    (greedy farthest-point) selection -- a random first point, then repeatedly the point
    farthest from all landmarks chosen so far -- which spreads the landmarks over the data
    and is the choice recommended by de Silva & Tenenbaum; it calls ``D_fn`` ``m`` times.
    MaxMin favours outliers: on data with a few far-away points random landmarks can be
    the better choice.

    Parameters
    ----------
    n : int
        Number of points.
    m : int
        Number of landmarks, ``1 <= m <= n``.
    random_state : int or numpy.random.Generator, optional
        Seeds the random choice (or MaxMin's first point).
    D_fn : callable, optional
        ``D_fn(i)`` returns the ``(n,)`` distances from point ``i`` to every point.

    Returns
    -------
    indices : (m,) ndarray of int
        The landmarks: sorted for the random choice, in order of selection for MaxMin.

    References
    ----------
    .. [1] V. de Silva and J. B. Tenenbaum, "Sparse multidimensional scaling using landmark
       points", Technical report, Stanford University (2004).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(100, 2))
    >>> choose_landmarks(100, 5, random_state=0).shape
    (5,)
    >>> idx = choose_landmarks(100, 5, random_state=0,
    ...                        D_fn=lambda i: cdist(points[i : i + 1], points)[0])
    >>> len(set(idx.tolist()))
    5
    """
    n = check_positive_int(n, "n")
    m = check_positive_int(m, "m")
    if m > n:
        raise ValueError(
            f"The 'm' parameter must be at most the number of points ({n}). Got {m} instead."
        )
    rng = np.random.default_rng(random_state)
    if D_fn is None:
        return np.sort(rng.choice(n, size=m, replace=False))
    idx = np.empty(m, dtype=np.intp)
    idx[0] = rng.integers(n)
    nearest = np.full(n, np.inf)
    for j in range(m):
        if j > 0:
            idx[j] = int(np.argmax(nearest))
        d = np.asarray(D_fn(int(idx[j])), dtype=np.float64)
        if d.shape != (n,):
            raise ValueError(
                f"The 'D_fn' callable must return the ({n},) distances from one point to "
                f"every point. Got shape {d.shape} instead."
            )
        np.minimum(nearest, d, out=nearest)
        nearest[idx[: j + 1]] = -1.0  # never pick a landmark twice, even with ties at 0
    return idx
