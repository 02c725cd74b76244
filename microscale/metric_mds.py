"""Metric multidimensional scaling: classical MDS, SMACOF and Kruskal's stress.

The paper embeds the texture distances with metric MDS (Sec. III C of Lubbers, Lookman &
Barros 2017) and reports Kruskal's stress-1 (their Eq. 8). This module does the same with
four plain functions on arrays:

- :func:`classical_mds` -- Torgerson's scaling, the closed-form start;
- :func:`smacof` -- metric SMACOF (Guttman transform, unit weights) from a given start;
- :func:`mds` -- classical MDS followed by SMACOF, for one dimension or several at once;
- :func:`stress` -- Kruskal's stress-1 of an embedding, in float64.

:func:`stress_from_rows` (and :func:`stresses_from_rows`, for several embeddings in one
pass) reports the stress of a matrix too large to hold, from row blocks; landmark MDS
(:mod:`microscale.landmark`) is measured that way. The checks of a distance matrix and of a
configuration (:func:`check_distances`, :func:`check_configuration` ...) are public: the
landmark module uses them too.

The SMACOF iterations are dense torch work on ``(n, n)`` float32 matrices, so they run on a
GPU when there is one; the stress that decides convergence is accumulated in float64.
Outputs are float64 numpy arrays.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from microscale._validation import check_positive_int
from microscale.device import resolve_device

__all__ = [
    "MDSFit",
    "MDSInfo",
    "check_configuration",
    "check_distances",
    "check_n_components",
    "check_rows",
    "classical_mds",
    "mds",
    "mds_with_info",
    "smacof",
    "stress",
    "stress_from_rows",
    "stresses_from_rows",
    "to_numpy",
]

# Relative tolerance (to the largest distance) for the symmetry and zero-diagonal checks.
# Distances computed in float32 on a GPU are symmetric only to about 1e-7.
_ATOL_REL = 1e-5


# Lower bound on an embedded distance, as a fraction of the root-mean-square distance, in
# the float32 iterations (d >= 2): closer pairs are treated as this far apart when their
# SMACOF weight d_ij / dhat_ij is formed. The majorization inequality still holds with
# such capped weights, so the stress still never increases.
_FLOOR_REL = 1e-3


# Below this size, or for this large a share of the spectrum, a dense eigensolver is used.
_DENSE_EIGH_N = 200


_DENSE_EIGH_FRACTION = 0.2


# Up to this size the Lanczos solver runs on one BLAS thread (see _top_eigenpairs).
_ONE_THREAD_EIGSH_N = 4096


# Rows per block when the stress is evaluated (bounds the float64 temporary).
_STRESS_BLOCK = 1024


@dataclass(frozen=True)
class MDSInfo:
    """What :func:`mds` found out besides the embedding.

    Attributes
    ----------
    stress : float
        Kruskal's stress-1 of the returned embedding (see :func:`stress`); 0.0 for an
        all-zero distance matrix.
    n_iter : int
        SMACOF iterations (Guttman transforms) of the run that was kept.
    converged : bool
        Whether that run met the ``eps`` criterion before ``max_iter``.
    eigenvalues : (n_components,) ndarray
        The largest eigenvalues of the double-centred matrix ``B = -1/2 J D**2 J``, in
        decreasing order and *before* clipping; negative ones mean ``D`` is not Euclidean
        in that many dimensions.
    n_clipped : int
        How many of ``eigenvalues`` were negative and clipped to 0 in the classical start.
    """

    stress: float
    n_iter: int
    converged: bool
    eigenvalues: np.ndarray
    n_clipped: int


@dataclass(frozen=True)
class MDSFit:
    """What :func:`mds_with_info` returns: every embedding with what was found out.

    Attributes
    ----------
    embeddings : dict of int to (n, k) ndarray of float64
        The centred embedding of each dimension ``k``, as :func:`mds` returns them.
    info : dict of int to MDSInfo
        Stress, iterations, convergence and eigenvalues of each dimension.
    """

    embeddings: dict[int, np.ndarray]
    info: dict[int, MDSInfo]


def to_numpy(a: ArrayLike | torch.Tensor) -> np.ndarray:
    """``a`` as a numpy array; a torch tensor is detached and copied to the CPU first."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def check_distances(D: ArrayLike | torch.Tensor) -> np.ndarray:
    """Validate a distance matrix; return a symmetric float64 copy with a zero diagonal."""
    D = to_numpy(D)
    if not (np.issubdtype(D.dtype, np.floating) or np.issubdtype(D.dtype, np.integer)):
        raise ValueError(
            f"The distance matrix must hold real numbers. Got dtype {D.dtype} instead."
        )
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(
            f"The distance matrix must be square, of shape (n, n). Got shape {D.shape} instead."
        )
    if D.shape[0] < 2:
        raise ValueError(
            f"The distance matrix must describe at least 2 points. Got shape {D.shape} instead."
        )
    D = np.array(D, dtype=np.float64)
    if not np.isfinite(D).all():
        n_nan = int(np.isnan(D).sum())
        if n_nan:
            raise ValueError(
                f"The distance matrix contains {n_nan} NaN entries; remove the items whose "
                "distances are missing, or compute the missing distances, before embedding."
            )
        raise ValueError(
            f"The distance matrix contains {int(np.isinf(D).sum())} infinite entries; all "
            "distances must be finite."
        )
    n_neg = int((D < 0).sum())
    if n_neg:
        raise ValueError(
            f"The distance matrix contains {n_neg} negative entries (smallest {D.min():g}); "
            "distances must be non-negative."
        )
    atol = _ATOL_REL * float(D.max())
    diag = np.abs(np.diagonal(D))
    n_diag = int((diag > atol).sum())
    if n_diag:
        raise ValueError(
            f"The distance matrix must have a zero diagonal, but {n_diag} diagonal entries "
            f"are nonzero (largest {diag.max():g}). Each item is at distance 0 from itself: "
            "set the diagonal to 0."
        )
    asym = float(np.abs(D - D.T).max())
    if asym > atol:
        raise ValueError(
            f"The distance matrix must be symmetric, but |D - D.T| reaches {asym:g} "
            f"(tolerance {atol:g}). Symmetrize it, e.g. with (D + D.T) / 2."
        )
    D += D.T
    D *= 0.5
    np.fill_diagonal(D, 0.0)
    return D


def check_n_components(n_components: object, n: int) -> int:
    """``n_components`` as an int in ``[1, n)``: an embedding of n points has fewer dims."""
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral):
        raise ValueError(
            f"The 'n_components' parameter must be a positive int. Got {n_components!r} instead."
        )
    k = int(n_components)
    if k < 1:
        raise ValueError(f"The 'n_components' parameter must be a positive int. Got {k} instead.")
    if k >= n:
        raise ValueError(
            f"The 'n_components' parameter must be less than the number of points ({n}). "
            f"Got {k} instead."
        )
    return k


def _check_dims(n_components: int | Sequence[int], n: int) -> tuple[list[int], bool]:
    """Return (dims, multi): the requested dimensions and whether a sequence was given."""
    if isinstance(n_components, Sequence | np.ndarray) and not isinstance(n_components, str):
        dims = [check_n_components(k, n) for k in n_components]
        if not dims:
            raise ValueError(
                "The 'n_components' parameter must be a positive int or a non-empty "
                "sequence of them. Got an empty sequence instead."
            )
        return list(dict.fromkeys(dims)), True
    return [check_n_components(n_components, n)], False


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"The 'eps' parameter must be a non-negative float. Got {eps!r} instead.")
    return float(eps)


def check_configuration(X: ArrayLike | torch.Tensor, n: int, name: str) -> np.ndarray:
    """Validate an (n, d) embedding (named ``name`` in errors); return a float64 copy."""
    X = to_numpy(X)
    if X.ndim != 2:
        raise ValueError(
            f"The '{name}' array must be 2-D, of shape (n_points, n_components). Got shape "
            f"{X.shape} instead."
        )
    if X.shape[0] != n:
        raise ValueError(
            f"The '{name}' array has {X.shape[0]} rows but the distance matrix has {n}; "
            "give one row per point."
        )
    if X.shape[1] < 1:
        raise ValueError(f"The '{name}' array must have at least one column. Got none.")
    X = np.array(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(
            f"The '{name}' array contains {int((~np.isfinite(X)).sum())} NaN or infinite "
            "entries; all coordinates must be finite."
        )
    return X


def _raw_stress(D: np.ndarray, X: np.ndarray) -> float:
    """sum_{i<j} (d_ij - dhat_ij)**2 in float64, exact differences, in row blocks."""
    n = D.shape[0]
    total = 0.0
    for start in range(0, n, _STRESS_BLOCK):
        stop = min(start + _STRESS_BLOCK, n)
        block = cdist(X[start:stop], X)
        block -= D[start:stop]
        total += float(np.einsum("ij,ij->", block, block))
    return 0.5 * total


def stress(D: ArrayLike | torch.Tensor, X: ArrayLike | torch.Tensor) -> float:
    """Kruskal's stress-1 of an embedding.

    ``sigma = sqrt( sum_{i<j} (d_ij - dhat_ij)**2 / sum_{i<j} d_ij**2 )``, with ``dhat`` the
    Euclidean distances between the rows of ``X`` (Eq. 8 of the paper), computed in float64
    from exact coordinate differences (no Gram-matrix shortcut), in row blocks.

    Parameters
    ----------
    D : (n, n) array_like or torch.Tensor
        Symmetric, non-negative distances with a zero diagonal.
    X : (n, d) array_like or torch.Tensor
        The embedded points, one row per item.

    Returns
    -------
    float
        The stress-1, 0 for a perfect fit. It does not change when ``X`` is rotated,
        reflected or translated.

    Raises
    ------
    ValueError
        If ``D`` is not a valid distance matrix, if ``X`` does not have one finite row per
        point, or if every distance is 0 (the normalisation ``sum d_ij**2`` is then 0 and
        the stress undefined).

    References
    ----------
    .. [1] J. B. Kruskal, "Multidimensional scaling by optimizing goodness of fit to a
       nonmetric hypothesis", Psychometrika 29, 1-27 (1964). doi:10.1007/BF02289565

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    >>> stress(cdist(points, points), points)
    0.0
    >>> round(stress(cdist(points, points), 2 * points), 3)
    1.0
    """
    D = check_distances(D)
    X = check_configuration(X, D.shape[0], "X")
    norm = 0.5 * float(np.einsum("ij,ij->", D, D))
    if norm == 0.0:
        raise ValueError(
            "The stress is undefined when every distance is 0 (it is normalised by the sum "
            "of squared distances); there is nothing to embed."
        )
    return float(np.sqrt(_raw_stress(D, X) / norm))


def _sign_flip(U: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of each column positive (like sklearn's svd_flip)."""
    rows = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[rows, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


def _top_eigenpairs(D: np.ndarray, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Largest k eigenpairs of B = -1/2 J D**2 J: (w descending (k,), U (n, k)), float64."""
    n = D.shape[0]
    if not D.any():
        return np.zeros(k), np.zeros((n, k))
    if device.type != "cpu":
        B = torch.as_tensor(D, device=device).square()
        B -= B.mean(dim=0, keepdim=True)
        B -= B.mean(dim=1, keepdim=True)
        B *= -0.5
        w_all, U_all = torch.linalg.eigh(B)
        w = w_all[-k:].flip(0).cpu().numpy()
        U = U_all[:, -k:].flip(1).cpu().numpy()
        return w, _sign_flip(U)
    B = np.square(D)
    B -= B.mean(axis=0, keepdims=True)
    B -= B.mean(axis=1, keepdims=True)
    B *= -0.5
    w = U = None
    if n > _DENSE_EIGH_N and k < _DENSE_EIGH_FRACTION * n:
        # Lanczos (ARPACK) for the k largest algebraic eigenvalues: at n = 1000, k = 10 it
        # is ~15x faster than a full eigh. Fixed start vector: deterministic output.
        # One BLAS thread up to moderate n: the cost is ~100 matrix-vector products, which
        # gain nothing from threads at this size and lose a lot on a busy machine (n = 1000:
        # 6 ms on 1 thread, 11 ms on 2 of an idle 2-core box, 0.7 s on 2 of a busy one).
        v0 = np.random.default_rng(0).standard_normal(n)
        limit = threadpool_limits(1, user_api="blas") if n <= _ONE_THREAD_EIGSH_N else nullcontext()
        try:
            with limit:
                w, U = scipy.sparse.linalg.eigsh(B, k=k, which="LA", v0=v0, tol=0)
        except scipy.sparse.linalg.ArpackError:  # pragma: no cover - fall back to dense
            w = U = None
    if w is None:
        w, U = scipy.linalg.eigh(B, subset_by_index=[n - k, n - 1])
    order = np.argsort(w)[::-1]
    return w[order], _sign_flip(U[:, order])


def _classical_from_eigenpairs(w: np.ndarray, U: np.ndarray, k: int) -> np.ndarray:
    return U[:, :k] * np.sqrt(np.clip(w[:k], 0.0, None))


def classical_mds(
    D: ArrayLike | torch.Tensor,
    n_components: int,
    *,
    device: str | None = None,
    return_eigenvalues: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Classical (Torgerson) multidimensional scaling.

    Double-centres the squared distances, ``B = -1/2 J D**2 J`` with ``J = I - 11'/n``, and
    returns ``U_k sqrt(w_k)`` for the ``k`` largest eigenpairs ``(w_k, U_k)`` of ``B``. For
    Euclidean distances this recovers the points up to rotation, reflection and translation
    (it equals PCA of the points).

    Parameters
    ----------
    D : (n, n) array_like or torch.Tensor
        Symmetric, non-negative distances with a zero diagonal.
    n_components : int
        Embedding dimension, ``1 <= n_components < n``.
    device : str, optional
        Where to solve the eigenproblem. On the CPU (the default when CUDA is absent) only
        the top eigenpairs are computed, by Lanczos iteration (ARPACK via
        :func:`scipy.sparse.linalg.eigsh`; a dense solver for small ``n``); on a GPU a full
        float64 ``torch.linalg.eigh``.
    return_eigenvalues : bool, default False
        Also return the eigenvalues.

    Returns
    -------
    X : (n, n_components) ndarray of float64
        The embedding, columns in decreasing order of eigenvalue. Each column's
        largest-magnitude entry of the eigenvector is positive, so the output is
        deterministic. Negative eigenvalues (``D`` not Euclidean in that many dimensions)
        are clipped to 0: their columns are 0. An all-zero ``D`` gives all zeros.
    eigenvalues : (n_components,) ndarray of float64
        Only with ``return_eigenvalues=True``: the eigenvalues before clipping, decreasing.

    References
    ----------
    .. [1] W. S. Torgerson, "Multidimensional scaling: I. Theory and method",
       Psychometrika 17, 401-419 (1952). doi:10.1007/BF02288916

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(20, 2))
    >>> D = cdist(points, points)
    >>> X = classical_mds(D, 2, device="cpu")
    >>> bool(np.allclose(cdist(X, X), D))
    True
    """
    D = check_distances(D)
    k = check_n_components(n_components, D.shape[0])
    w, U = _top_eigenpairs(D, k, resolve_device(device))
    X = _classical_from_eigenpairs(w, U, k)
    return (X, w) if return_eigenvalues else X


def _smacof_1d(
    D: torch.Tensor, y: torch.Tensor, d2: float, max_iter: int, eps: float
) -> tuple[torch.Tensor, int, bool]:
    """SMACOF on a line, float64. D (n, n), y (n,) on the device.

    On a line, b_ij (x_i - x_j) = d_ij sign(x_i - x_j), so the Guttman transform is
    x_i <- (1/n) sum_j d_ij sign(x_i - x_j) (coincident points get weight 0, as in the
    textbook algorithm). One-dimensional SMACOF is combinatorial: it settles on the fixed
    point of a rank order, and float32 rounding would change which one, so this path runs
    in float64 and follows scikit-learn's trajectory to rounding.
    """
    n = y.shape[0]
    work = torch.empty_like(D)
    prev = None
    y = y - y.mean()
    for it in range(max_iter + 1):
        torch.sub(y[:, None], y[None, :], out=work).sign_().mul_(D)
        g = work.sum(dim=1) / n
        # Stress from O(n) sums: rho = sum_{i<j} d_ij |x_i - x_j| = n x.g and
        # eta2 = sum_{i<j} (x_i - x_j)**2 = n |x|**2 (x is centred).
        eta2, rho = (n * torch.stack([torch.dot(y, y), torch.dot(y, g)])).tolist()
        s = d2 - 2.0 * rho + eta2
        if prev is not None and it >= 2 and prev - s < eps * eta2:
            return y, it, True
        if it == max_iter:
            return y, it, False
        prev = s
        y = g - g.mean()
    raise AssertionError("unreachable")  # pragma: no cover


def _smacof_nd(
    D: torch.Tensor, Y: torch.Tensor, d2: float, max_iter: int, eps: float
) -> tuple[torch.Tensor, int, bool]:
    """SMACOF in float32. D (n, n), Y (d, n) (points as columns) on the device.

    Each iteration, for the current configuration Y:

    1. dhat from one GEMM, ``[Y; |y|^2; 1]' [-2Y; 1; |y|^2]``, clamped and square-rooted;
    2. the stress sum_{i<j} (d - dhat)^2 with float64 accumulation (row sums of a float32
       norm, ~1e-10 relative);
    3. the Guttman transform G = Y B(Y) / n = (Y * colsum(R) - Y @ R) / n, R = d / dhat.

    Phase 1 is plain SMACOF, Y <- G, stopped by scikit-learn's rule (stress decrease <
    eps * sum dhat^2). Phase 2 continues with the relaxed update: rescale Y by the
    stress-optimal factor c = rho / eta2 (G(cY) = G(Y)), then Y <- 2 G - cY (de Leeuw &
    Heiser 1980; the step 2 keeps the majorization bound, so the stress never increases;
    rescaling first removes the scale mode that the plain relaxed update leaves
    oscillating), until the decrease is again below eps * sum dhat^2.

    Returns the configuration whose stress was measured last, the number of updates that
    produced it, and whether phase 2 converged.
    """
    n = D.shape[0]
    floor2 = (_FLOOR_REL**2) * 2.0 * d2 / (n * (n - 1))
    H = torch.empty_like(D)
    R = torch.empty_like(D)
    ones = torch.ones((1, n), dtype=D.dtype, device=D.device)
    prev = None
    relaxed = False
    last_plain = 0
    for it in range(max_iter + 1):
        Y = Y - Y.mean(dim=1, keepdim=True)
        sq = (Y * Y).sum(dim=0, keepdim=True)
        torch.mm(torch.cat([Y, sq, ones]).T, torch.cat([-2.0 * Y, ones, sq]), out=H)
        H.clamp_(min=floor2).sqrt_()
        torch.sub(H, D, out=R)
        raw_t = 0.5 * torch.linalg.vector_norm(R, dim=1).double().square().sum()
        torch.div(D, H, out=R)
        G = (Y * R.sum(dim=0) - Y @ R) / n
        Y64 = Y.double()
        eta2_t = n * Y64.square().sum()
        rho_t = n * (Y64 * G.double()).sum()
        raw, eta2, rho = torch.stack([raw_t, eta2_t, rho_t]).tolist()  # one device sync
        s = raw
        if relaxed and eta2 > 0.0:
            s = raw - (eta2 - rho) ** 2 / eta2  # stress of cY, c = rho / eta2
        c = rho / eta2 if relaxed and eta2 > 0.0 else 1.0
        if prev is not None and it >= 2:
            if not relaxed and prev - s < eps * eta2:
                relaxed, last_plain = True, it
                c = rho / eta2 if eta2 > 0.0 else 1.0
            elif relaxed and it > last_plain and prev - s < eps * eta2:
                return c * Y, it, True
        if it == max_iter:
            return c * Y, it, False
        prev = s
        Y = 2.0 * G - c * Y if relaxed else G
    raise AssertionError("unreachable")  # pragma: no cover


def _smacof_run(
    D64: np.ndarray,
    D_dev: dict[torch.dtype, torch.Tensor],
    d2: float,
    X0: np.ndarray,
    *,
    max_iter: int,
    eps: float,
    device: torch.device,
) -> tuple[np.ndarray, float, int, bool]:
    """One SMACOF run from X0 (n, d); returns (X, stress-1, n_iter, converged).

    The result is never worse than the start: when the iterations do not lower the
    float64 stress of ``X0`` (e.g. ``X0`` already fits exactly, beyond float32 precision),
    ``X0`` itself is returned.
    """
    dtype = torch.float64 if X0.shape[1] == 1 else torch.float32
    if dtype not in D_dev:
        D_dev[dtype] = torch.as_tensor(D64, dtype=dtype, device=device)
    D = D_dev[dtype]
    if X0.shape[1] == 1:
        y0 = torch.as_tensor(X0[:, 0], dtype=dtype, device=device)
        y, n_iter, converged = _smacof_1d(D, y0, d2, max_iter, eps)
        X = y.cpu().numpy()[:, None]
    else:
        Y0 = torch.as_tensor(X0.T, dtype=dtype, device=device).contiguous()
        Y, n_iter, converged = _smacof_nd(D, Y0, d2, max_iter, eps)
        X = Y.T.cpu().numpy().astype(np.float64)
    X = X - X.mean(axis=0)
    s = _raw_stress(D64, X)
    s0 = _raw_stress(D64, X0)
    if s0 <= s:
        X, s = X0 - X0.mean(axis=0), s0
    return X, float(np.sqrt(s / d2)), n_iter, converged


def smacof(
    D: ArrayLike | torch.Tensor,
    X0: ArrayLike | torch.Tensor,
    *,
    max_iter: int = 300,
    eps: float = 1e-6,
    device: str | None = None,
) -> tuple[np.ndarray, float, int]:
    """Metric SMACOF (unit weights) from a given start.

    Minimises the raw stress ``sum_{i<j} (d_ij - dhat_ij)**2`` by majorization: each
    iteration applies the Guttman transform ``X <- B(X) X / n``, with
    ``B_ij = -d_ij / dhat_ij`` (0 where ``dhat_ij = 0``) and ``B_ii = -sum_{j != i} B_ij``,
    which never increases the stress.

    The run has two phases. Phase 1 is exactly scikit-learn's algorithm: plain Guttman
    transforms, stopped by its rule (see ``eps``); from the same start it follows the same
    trajectory and so ends at the same stress. Phase 2 (``d >= 2`` only) then polishes with
    the relaxed update -- rescale ``X`` by the stress-optimal factor, then
    ``X <- 2 B(X) X / n - X`` (de Leeuw & Heiser 1980; de Leeuw 1988) -- which keeps the
    majorization bound, so the stress still never increases, and converges about twice as
    fast as the plain update; it stops by the same rule. The result can therefore only be
    better than scikit-learn's from the same start. (Relaxing from the first iteration would
    be faster still, but can land in a different local minimum.)

    The ``(n, n)`` work is float32 torch (a GEMM for the distances, elementwise ops, a GEMM
    for the transform), on a GPU when there is one; the stress that decides convergence is
    accumulated in float64. One-dimensional runs use float64 (see Notes).

    Parameters
    ----------
    D : (n, n) array_like or torch.Tensor
        Symmetric, non-negative distances with a zero diagonal.
    X0 : (n, d) array_like or torch.Tensor
        Starting configuration; its number of columns sets the embedding dimension.
    max_iter : int, default 300
        Maximum number of iterations, both phases together.
    eps : float, default 1e-6
        A phase stops when one iteration lowers the raw stress by less than ``eps`` times
        the embedding's ``sum_{i<j} dhat_ij**2`` -- scikit-learn's rule and default.
    device : str, optional
        Torch device; default CUDA when available, else CPU.

    Returns
    -------
    X : (n, d) ndarray of float64
        The embedding, centred. Never worse than the start: if the iterations do not lower
        the stress of ``X0`` (e.g. ``X0`` already fits exactly, beyond float32 precision),
        the centred ``X0`` is returned.
    stress : float
        Kruskal's stress-1 of ``X`` (as :func:`stress` computes it), or 0.0 if every
        distance is 0.
    n_iter : int
        Number of iterations (Guttman transforms) performed.

    Notes
    -----
    On a line SMACOF is combinatorial: it converges in a few steps to the fixed point of a
    rank order, and rounding (or relaxation) decides which order. One-dimensional runs
    therefore use float64 and only phase 1, with the transform written as
    ``x_i <- sum_j d_ij sign(x_i - x_j) / n``.

    Pairs embedded closer than ``1e-3`` times the root-mean-square distance are given the
    weight of that floor distance in the float32 path (the float32 Gram-matrix distances are
    not more accurate than that); the majorization bound, hence monotonicity, still holds.

    On the CPU the iterations use torch's intra-op thread pool: set it with
    :func:`torch.set_num_threads`. On a machine shared with other busy processes one
    thread can be much faster than several (every OpenMP barrier may wait a scheduler slice
    for a descheduled thread).

    References
    ----------
    .. [1] J. de Leeuw, "Applications of convex analysis to multidimensional scaling",
       in Recent Developments in Statistics, pp. 133-145 (1977).
    .. [2] J. de Leeuw and W. J. Heiser, "Multidimensional scaling with restrictions on the
       configuration", in Multivariate Analysis V, pp. 501-522 (1980).
    .. [3] J. de Leeuw, "Convergence of the majorization method for multidimensional
       scaling", Journal of Classification 5, 163-180 (1988). doi:10.1007/BF01897162
    .. [4] I. Borg and P. J. F. Groenen, Modern Multidimensional Scaling, 2nd ed.,
       Springer (2005), ch. 8. doi:10.1007/0-387-28981-X

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(30, 3))
    >>> D = cdist(points, points)
    >>> X, sigma, n_iter = smacof(D, points[:, :2], device="cpu")
    >>> X.shape
    (30, 2)
    """
    D64 = check_distances(D)
    n = D64.shape[0]
    X0 = check_configuration(X0, n, "X0")
    if X0.shape[1] >= n:
        raise ValueError(
            f"The 'X0' array has {X0.shape[1]} columns; the embedding dimension must be less "
            f"than the number of points ({n})."
        )
    max_iter = check_positive_int(max_iter, "max_iter")
    eps = _check_eps(eps)
    dev = resolve_device(device)
    d2 = 0.5 * float(np.einsum("ij,ij->", D64, D64))
    if d2 == 0.0:
        return np.zeros_like(X0), 0.0, 0
    X, sigma, n_iter, _ = _smacof_run(D64, {}, d2, X0, max_iter=max_iter, eps=eps, device=dev)
    return X, sigma, n_iter


def _fit(
    D: ArrayLike | torch.Tensor,
    n_components: int | Sequence[int],
    *,
    init: ArrayLike | torch.Tensor | None,
    n_init: int,
    max_iter: int,
    eps: float,
    random_state: int | np.random.Generator | None,
    device: str | None,
) -> tuple[dict[int, np.ndarray], dict[int, MDSInfo], list[int], bool]:
    """The work of :func:`mds`: (embeddings, infos, dims, whether a sequence was given)."""
    D64 = check_distances(D)
    n = D64.shape[0]
    dims, multi = _check_dims(n_components, n)
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    eps = _check_eps(eps)
    if init is not None:
        if multi:
            raise ValueError(
                "The 'init' parameter needs a single int 'n_components'; embed each "
                "dimension in its own call to start them from given configurations."
            )
        init = check_configuration(init, n, "init")
        if init.shape[1] != dims[0]:
            raise ValueError(
                f"The 'init' array has {init.shape[1]} columns but 'n_components' is "
                f"{dims[0]}; they must match."
            )
    dev = resolve_device(device)
    rng = np.random.default_rng(random_state)

    d2 = 0.5 * float(np.einsum("ij,ij->", D64, D64))
    k_max = max(dims)
    w, U = _top_eigenpairs(D64, k_max, dev)
    rms = np.sqrt(2.0 * d2 / (n * (n - 1)))
    D_dev: dict[torch.dtype, torch.Tensor] = {}

    embeddings: dict[int, np.ndarray] = {}
    infos: dict[int, MDSInfo] = {}
    for k in dims:
        n_clipped = int((w[:k] < 0).sum())
        if d2 == 0.0:
            embeddings[k] = np.zeros((n, k))
            infos[k] = MDSInfo(0.0, 0, True, w[:k].copy(), n_clipped)
            continue
        if init is not None:
            start = init
        else:
            start = _classical_from_eigenpairs(w, U, k)
            dead = w[:k] <= 0
            if dead.any():
                start[:, dead] = 1e-3 * rms * rng.standard_normal((n, int(dead.sum())))
        best = None
        for run in range(n_init):
            X0 = start if run == 0 else rms / np.sqrt(2.0 * k) * rng.standard_normal((n, k))
            result = _smacof_run(D64, D_dev, d2, X0, max_iter=max_iter, eps=eps, device=dev)
            if best is None or result[1] < best[1]:
                best = result
        X, sigma, n_iter, converged = best
        embeddings[k] = X
        infos[k] = MDSInfo(sigma, n_iter, converged, w[:k].copy(), n_clipped)
    return embeddings, infos, dims, multi


def mds(
    D: ArrayLike | torch.Tensor,
    n_components: int | Sequence[int],
    *,
    init: ArrayLike | torch.Tensor | None = None,
    n_init: int = 1,
    max_iter: int = 300,
    eps: float = 1e-6,
    random_state: int | np.random.Generator | None = None,
    device: str | None = None,
    return_info: bool = False,
) -> (
    np.ndarray
    | dict[int, np.ndarray]
    | tuple[np.ndarray, MDSInfo]
    | tuple[dict[int, np.ndarray], dict[int, MDSInfo]]
):
    """Metric MDS: classical MDS, then SMACOF, for one or several dimensions.

    This is the paper's embedding (Sec. III C). By default each dimension is a single
    SMACOF run (see :func:`smacof`) started from classical MDS (see :func:`classical_mds`).
    It reaches a Kruskal stress no higher than scikit-learn's ``MDS(init="classical_mds",
    n_init=1)`` on the same matrix -- its iterations from the same start, then a relaxed
    polish -- in a fraction of its time (``n = 1000``, dimensions 1 to 10, one CPU thread:
    about 1.3 s in one call against 8.5 s; see ``benchmarks/bench_mds.py``).

    Parameters
    ----------
    D : (n, n) array_like or torch.Tensor
        Symmetric, non-negative distances with a zero diagonal (checked to a relative
        tolerance of 1e-5 of the largest distance, then symmetrized exactly).
    n_components : int or sequence of int
        Embedding dimension(s), each ``1 <= k < n``. With a sequence, all dimensions are
        embedded in one call and **a dict** ``{k: (n, k) array}`` is returned, in the order
        given (duplicates dropped). The classical-MDS eigenpairs are then computed once,
        for the largest ``k``, and shared by all starts.
    init : (n, k) array_like or torch.Tensor, optional
        Start SMACOF from this configuration instead of classical MDS (e.g. a previous
        embedding, for incremental runs). Only with a single int ``n_components`` equal to
        its number of columns.
    n_init : int, default 1
        Number of SMACOF runs per dimension: the first from classical MDS (or ``init``),
        the others from random normal configurations drawn from ``random_state``, scaled so
        that their mean squared distance matches ``D``'s. The run with the lowest stress is
        kept.
    max_iter : int, default 300
        Maximum SMACOF iterations per run.
    eps : float, default 1e-6
        Convergence tolerance, scikit-learn's rule and default: stop when an iteration
        lowers the raw stress by less than ``eps * sum_{i<j} dhat_ij**2`` (see
        :func:`smacof`).
    random_state : int or numpy.random.Generator, optional
        Seeds the random starts (``n_init > 1``) and the small random values given to
        start columns whose eigenvalue was clipped to 0 (so SMACOF can use that
        dimension). Unused otherwise: the default result is deterministic.
    device : str, optional
        Torch device for the eigenproblem and the iterations; default CUDA when available,
        else CPU.
    return_info : bool, default False
        Deprecated (a FutureWarning; removed in the next release): also return an
        :class:`MDSInfo` per dimension. Use :func:`mds_with_info`, which has one return
        type.

    Returns
    -------
    X : (n, k) ndarray of float64, or dict {k: (n, k) ndarray}
        The centred embedding for an int ``n_components``; for a sequence, always a dict
        of them.

    Notes
    -----
    An all-zero ``D`` (every item identical) is embedded as all zeros, with
    ``info.stress == 0.0`` (a perfect fit); :func:`stress` itself raises for such a ``D``
    because stress-1 divides by ``sum d_ij**2``.

    Memory: a float64 host copy of ``D`` and, on the device, ``D`` and two work matrices,
    all ``(n, n)`` float32 -- float64 for ``k = 1`` (a call with ``k = 1`` among several
    dimensions keeps ``D`` in both precisions).

    On the CPU the iterations use torch's intra-op threads; see the Notes of
    :func:`smacof` about busy machines.

    References
    ----------
    .. [1] N. Lubbers, T. Lookman and K. Barros, "Inferring low-dimensional microstructure
       representations using convolutional neural networks", Phys. Rev. E 96, 052111
       (2017). doi:10.1103/PhysRevE.96.052111
    .. [2] I. Borg and P. J. F. Groenen, Modern Multidimensional Scaling, 2nd ed.,
       Springer (2005). doi:10.1007/0-387-28981-X

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(40, 5))
    >>> D = cdist(points, points)
    >>> X = mds(D, 2, device="cpu")
    >>> X.shape
    (40, 2)
    >>> embeddings = mds(D, [1, 2, 3], device="cpu")
    >>> sorted(embeddings), embeddings[3].shape
    ([1, 2, 3], (40, 3))
    """
    if return_info:
        warnings.warn(
            "mds(return_info=True) is deprecated and stops working in the next release: use "
            "mds_with_info(), which returns an MDSFit (embeddings and info, both dicts).",
            FutureWarning,
            stacklevel=2,
        )
    embeddings, infos, dims, multi = _fit(
        D,
        n_components,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        eps=eps,
        random_state=random_state,
        device=device,
    )
    if multi:
        return (embeddings, infos) if return_info else embeddings
    k = dims[0]
    return (embeddings[k], infos[k]) if return_info else embeddings[k]


def mds_with_info(
    D: ArrayLike | torch.Tensor,
    n_components: int | Sequence[int],
    *,
    init: ArrayLike | torch.Tensor | None = None,
    n_init: int = 1,
    max_iter: int = 300,
    eps: float = 1e-6,
    random_state: int | np.random.Generator | None = None,
    device: str | None = None,
) -> MDSFit:
    """:func:`mds`, with what it found out (stress, iterations, eigenvalues) per dimension.

    Parameters are those of :func:`mds`. The result has one type whatever
    ``n_components`` is: dicts keyed by dimension.

    Returns
    -------
    MDSFit
        ``embeddings`` {k: (n, k) ndarray} and ``info`` {k: MDSInfo}.

    Examples
    --------
    >>> D = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    >>> fit = mds_with_info(D, 1, device="cpu")
    >>> fit.embeddings[1].shape, round(fit.info[1].stress, 6)
    ((3, 1), 0.0)
    """
    embeddings, infos, _, _ = _fit(
        D,
        n_components,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        eps=eps,
        random_state=random_state,
        device=device,
    )
    return MDSFit(embeddings=embeddings, info=infos)


def check_rows(R: ArrayLike | torch.Tensor, m: int, name: str) -> np.ndarray:
    """Validate a (r, m) block of distances to the m landmarks; return it as float64."""
    R = to_numpy(R)
    if not (np.issubdtype(R.dtype, np.floating) or np.issubdtype(R.dtype, np.integer)):
        raise ValueError(f"The '{name}' array must hold real numbers. Got dtype {R.dtype} instead.")
    if R.ndim != 2 or R.shape[1] != m:
        raise ValueError(
            f"The '{name}' array must have shape (n_points, {m}), one column per landmark. "
            f"Got shape {R.shape} instead."
        )
    R = np.array(R, dtype=np.float64)
    if not np.isfinite(R).all():
        raise ValueError(
            f"The '{name}' array contains {int((~np.isfinite(R)).sum())} NaN or infinite "
            "entries; all distances must be finite."
        )
    if (R < 0).any():
        raise ValueError(
            f"The '{name}' array contains {int((R < 0).sum())} negative entries (smallest "
            f"{R.min():g}); distances must be non-negative."
        )
    return R


def stress_from_rows(
    rows: Callable[[int, int], ArrayLike],
    X: ArrayLike | torch.Tensor,
    *,
    batch_size: int = _STRESS_BLOCK,
) -> float:
    """Kruskal's stress-1 of an embedding, with the distances supplied in row blocks.

    The same number as :func:`stress` -- ``sqrt( sum (d_ij - dhat_ij)**2 / sum d_ij**2 )``
    in float64 from exact coordinate differences -- but the ``(n, n)`` distance matrix is
    never held: ``rows(i0, i1)`` is called for consecutive blocks and must return the
    distances from points ``i0:i1`` to every point. This is how the price of
    :func:`landmark_mds` is measured on the full matrix.

    Parameters
    ----------
    rows : callable
        ``rows(i0, i1)`` returns the ``(i1 - i0, n)`` distances of rows ``i0:i1`` (e.g.
        ``lambda i0, i1: cdist(points[i0:i1], points)``); it should describe a symmetric
        matrix with a zero diagonal (only the diagonal is checked).
    X : (n, d) array_like or torch.Tensor
        The embedded points, one row per item.
    batch_size : int, default 1024
        Rows per block; memory is a few ``(batch_size, n)`` float64 arrays.

    Returns
    -------
    float
        The stress-1, 0 for a perfect fit.

    Raises
    ------
    ValueError
        If a block has the wrong shape or holds invalid distances, or if every distance is
        0 (the stress is then undefined).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(50, 2))
    >>> s = stress_from_rows(lambda i0, i1: cdist(points[i0:i1], points), 2 * points)
    >>> round(s, 3)
    1.0
    """
    return stresses_from_rows(rows, [X], batch_size=batch_size)[0]


def stresses_from_rows(
    rows: Callable[[int, int], ArrayLike],
    Xs: Sequence[ArrayLike | torch.Tensor],
    *,
    batch_size: int = _STRESS_BLOCK,
) -> list[float]:
    """:func:`stress_from_rows` of several embeddings of the same points, in one pass.

    Each block of distances is read once and compared with every embedding, so the stress
    of embeddings in ``D* = 1 .. 10`` costs one pass over an out-of-core matrix, not ten.

    Parameters
    ----------
    rows : callable
        As in :func:`stress_from_rows`.
    Xs : sequence of (n, d_k) array_like or torch.Tensor
        Embeddings of the same ``n`` points (dimensions may differ).
    batch_size : int, default 1024
        Rows per block.

    Returns
    -------
    list of float
        The stress-1 of each embedding, in the order of ``Xs``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> points = np.random.default_rng(0).normal(size=(50, 2))
    >>> [round(s, 3) for s in stresses_from_rows(
    ...     lambda i0, i1: cdist(points[i0:i1], points), [points, 2 * points])]
    [0.0, 1.0]
    """
    configs = []
    for X in Xs:
        X = to_numpy(X)
        if X.ndim != 2:
            raise ValueError(
                f"The 'X' array must be 2-D, of shape (n_points, n_components). Got shape "
                f"{X.shape} instead."
            )
        configs.append(X)
    if not configs:
        raise ValueError("Xs is empty: pass at least one embedding.")
    n = configs[0].shape[0]
    configs = [check_configuration(X, n, "X") for X in configs]
    batch_size = check_positive_int(batch_size, "batch_size")
    norm = 0.0
    raw = [0.0] * len(configs)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        D = check_rows(rows(start, stop), n, "rows(i0, i1)")
        if D.shape[0] != stop - start:
            raise ValueError(
                f"The 'rows' callable must return {stop - start} rows for rows({start}, "
                f"{stop}). Got {D.shape[0]} instead."
            )
        diag = np.abs(D[np.arange(stop - start), np.arange(start, stop)])
        atol = _ATOL_REL * float(D.max()) if D.size else 0.0
        if (diag > atol).any():
            raise ValueError(
                f"The distances from 'rows' must have a zero diagonal, but "
                f"{int((diag > atol).sum())} diagonal entries in rows {start}:{stop} are "
                f"nonzero (largest {diag.max():g}). Each item is at distance 0 from itself."
            )
        norm += float(np.einsum("ij,ij->", D, D))
        for i, X in enumerate(configs):
            block = cdist(X[start:stop], X)
            block -= D
            block[np.arange(stop - start), np.arange(start, stop)] = 0.0
            raw[i] += float(np.einsum("ij,ij->", block, block))
    if norm == 0.0:
        raise ValueError(
            "The stress is undefined when every distance is 0 (it is normalised by the sum "
            "of squared distances); there is nothing to embed."
        )
    return [float(np.sqrt(r / norm)) for r in raw]
