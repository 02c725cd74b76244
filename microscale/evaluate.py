"""How well an embedding recovers the parameters of the images (docs/method.md section 6).

Plain numpy functions on an embedding ``X`` of shape ``(n, d)`` (the MDS coordinates, one
row per image) and the known parameters of the images:

:func:`angle_rmse`
    The angle-reconstruction error of the paper's Eq. 10 for a 2-D embedding of images
    whose stripe orientations ``theta`` lie in [0, pi).
:func:`r_squared`, :func:`regression_vector`
    Ordinary least squares (with intercept) from the embedding to one parameter, its
    coefficient of determination (Eq. 13) and its coefficient vector.
:func:`regression_angle`
    The angle between two parameters' regression vectors (Eq. 14).
:func:`stress_curve`
    Kruskal's stress-1 (Eq. 8) of embeddings of several dimensions.
:func:`grid_metrics`
    All of the above for the 3-D task, as one dictionary.
:func:`good_window`
    The range of a parameter (e.g. the noise amplitude A) over which a curve of errors
    stays below a threshold: how the paper's Fig. 6 windows are read off.

References
----------
.. [1] N. Lubbers, T. Lookman and K. Barros, "Inferring low-dimensional microstructure
       representations using convolutional neural networks", Phys. Rev. E 96, 052111
       (2017). :doi:`10.1103/PhysRevE.96.052111`
.. [2] J. B. Kruskal, "Multidimensional scaling by optimizing goodness of fit to a
       nonmetric hypothesis", Psychometrika 29, 1-27 (1964).
       :doi:`10.1007/BF02289565`
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any, Literal, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "AngleFit",
    "angle_rmse",
    "good_window",
    "grid_metrics",
    "r_squared",
    "regression_angle",
    "regression_vector",
    "stress_curve",
]

_MIN_SAMPLES = 3


class AngleFit(NamedTuple):
    """The details of an :func:`angle_rmse` fit.

    Attributes
    ----------
    rmse : float
        Root-mean-square angle error in radians, in [0, pi/2].
    c : float
        The fitted offset of Eq. 10 in radians, in [0, 2 pi).
    mirrored : bool
        True when the mirror image (polar angles ``-phi``) fitted better.
    residuals : (n,) ndarray
        ``theta_i - (+-phi_i + c) / 2`` wrapped to (-pi/2, pi/2], in the order of the input.
    """

    rmse: float
    c: float
    mirrored: bool
    residuals: np.ndarray


# ---------------------------------------------------------------------------- validation


def _as_finite_float(a: ArrayLike, name: str, caller: str) -> np.ndarray:
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        raise ValueError(f"The '{name}' parameter must be real-valued; got a complex array.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(
            f"The '{name}' parameter must be a numeric array; got dtype {arr.dtype} instead."
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        count = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"The '{name}' parameter contains {count} NaN or infinite value(s); remove or "
            f"impute them before calling {caller}."
        )
    return arr


def _check_embedding(
    X: ArrayLike, caller: str, *, n_components: int | None = None, name: str = "X"
) -> np.ndarray:
    arr = np.asarray(X)
    if arr.ndim != 2:
        shape = "(n_samples, 2)" if n_components == 2 else "(n_samples, n_components)"
        hint = " Use X.reshape(-1, 1) for a single coordinate." if arr.ndim == 1 else ""
        raise ValueError(
            f"The '{name}' parameter must be a 2-D array of shape {shape}. Got an array of "
            f"shape {arr.shape} instead.{hint}"
        )
    if n_components is not None and arr.shape[1] != n_components:
        raise ValueError(
            f"The '{name}' parameter must have {n_components} columns for {caller}: pass the "
            f"{n_components}-D embedding. Got shape {arr.shape} instead."
        )
    if arr.shape[1] < 1:
        raise ValueError(
            f"The '{name}' parameter must have at least one column. Got shape {arr.shape} instead."
        )
    if arr.shape[0] < _MIN_SAMPLES:
        raise ValueError(
            f"{caller} needs at least {_MIN_SAMPLES} samples (rows of '{name}'). Got "
            f"{arr.shape[0]} instead."
        )
    return _as_finite_float(arr, name, caller)


def _check_target(y: ArrayLike, n: int, name: str, caller: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(
            f"The '{name}' parameter must be a 1-D array of shape (n_samples,). Got an array "
            f"of shape {arr.shape} instead."
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"The '{name}' parameter must have one value per row of X: X has {n} rows but "
            f"'{name}' has {arr.shape[0]} values."
        )
    return _as_finite_float(arr, name, caller)


# ---------------------------------------------------------------------------- angle task


def _wrap_half_pi(x: np.ndarray) -> np.ndarray:
    """Wrap angles to (-pi/2, pi/2] (angles modulo pi)."""
    return np.pi / 2 - np.mod(np.pi / 2 - x, np.pi)


def _mean_square(a: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Mean over axis -1 of ``wrap(a - s)**2`` for one or several offsets ``s``."""
    s = np.asarray(s, dtype=np.float64)[..., np.newaxis]
    return np.mean(_wrap_half_pi(a - s) ** 2, axis=-1)


def _fit_offset(a: np.ndarray, *, n_check: int = 8) -> float:
    """Exact global minimiser ``s`` in [0, pi) of ``mean(wrap(a - s)**2)``.

    The objective is periodic (period pi) and piecewise quadratic; its kinks (where a
    residual crosses +-pi/2) are concave, so the minimum lies where it is smooth and
    equals the mean of the data unwrapped into a window of length pi. Such a window is
    fixed by the first sorted datum inside it, which gives n candidates: cutting the
    circle before sorted datum j, the unwrapped values are ``b_j, ..., b_{n-1}, b_0 + pi,
    ..., b_{j-1} + pi``, with mean ``mean(b) + j pi / n`` and a variance ``Q_j`` that
    follows from cumulative sums. In exact arithmetic ``min_j Q_j`` is the global minimum
    (``Q_j`` bounds the wrapped objective at the candidate from above, and equals it for
    the optimal window). To be robust to rounding, the ``n_check`` candidates with the
    smallest ``Q_j`` are re-evaluated with the wrapped objective, and the best is polished
    by one exact step within its quadratic piece. Cost: O(n log n).
    """
    n = a.shape[0]
    b = np.sort(np.mod(a, np.pi))
    j = np.arange(n)
    cum = np.concatenate(([0.0], np.cumsum(b)[:-1]))  # sum of b_i for i < j
    means = (b.sum() + j * np.pi) / n
    second = (np.sum(b**2) + 2 * np.pi * cum + j * np.pi**2) / n
    q = second - means**2
    best = np.argsort(q, kind="stable")[: min(n_check, n)]
    cands = np.mod(means[best], np.pi)
    values = _mean_square(a, cands)
    s = float(cands[np.argmin(values)])
    # One step to the minimum of the current quadratic piece: exact if the unwrapping
    # does not change, and kept only if it does not make the fit worse.
    s_new = float(np.mod(s + np.mean(_wrap_half_pi(a - s)), np.pi))
    if _mean_square(a, s_new) <= _mean_square(a, s):
        s = s_new
    return s


@overload
def angle_rmse(
    X: ArrayLike, theta: ArrayLike, *, return_details: Literal[False] = ...
) -> float: ...


@overload
def angle_rmse(X: ArrayLike, theta: ArrayLike, *, return_details: Literal[True]) -> AngleFit: ...


def angle_rmse(X: ArrayLike, theta: ArrayLike, *, return_details: bool = False) -> float | AngleFit:
    """Angle-reconstruction error of a 2-D embedding (Eq. 10 of [1]_).

    The origin is put at the centre of mass of ``X`` and ``phi_i`` is the polar angle
    (``arctan2``) of point ``i``. Orientations are defined modulo pi, so a full turn of the
    embedding is half a turn of the stripes: the error is

    ``RMSE = min over c, s = +-1 of sqrt(mean_i wrap(theta_i - (s phi_i + c) / 2)**2)``

    with ``wrap`` mapping to (-pi/2, pi/2]. The sign ``s`` takes the better of the two
    mirror images, since MDS fixes an embedding only up to rotation and reflection; the
    offset ``c`` absorbs the rotation. The minimisation over ``c`` is global and exact
    (see Notes), not a local search.

    Parameters
    ----------
    X : (n, 2) array_like
        The 2-D embedding, one row per image, ``n >= 3``.
    theta : (n,) array_like
        Stripe orientations in radians, nominally in [0, pi); any finite value is taken
        modulo pi.
    return_details : bool, optional
        Also return the fitted offset, the mirror choice and the residuals.

    Returns
    -------
    rmse : float
        Root-mean-square angle error in radians, in [0, pi/2]. With
        ``return_details=True``, an :class:`AngleFit` ``(rmse, c, mirrored, residuals)``
        instead, ``c`` in [0, 2 pi) and ``residuals`` of shape (n,) in input order.

    Raises
    ------
    ValueError
        If ``X`` is not ``(n, 2)``, ``theta`` is not ``(n,)``, ``n < 3``, or an input holds
        NaN or infinity.

    Notes
    -----
    With ``a_i = theta_i - s phi_i / 2`` and ``u = c / 2``, the objective is the mean of
    ``wrap(a_i - u)**2``, a function of ``u`` with period pi that is quadratic between
    the points where a residual crosses +-pi/2. Its minimum is the mean of the ``a_i``
    unwrapped into one of ``n`` windows of length pi, and all ``n`` candidates are scored
    at once from cumulative sums, in O(n log n). A point exactly at the centre of mass has
    polar angle 0 (the ``arctan2(0, 0)`` convention). Ties between the mirror images are
    resolved in favour of the unmirrored one.

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.arange(50) * np.pi / 50
    >>> X = np.column_stack([np.cos(2 * theta), -np.sin(2 * theta)]) * 3.0 + 1.0
    >>> fit = angle_rmse(X, theta, return_details=True)
    >>> bool(fit.rmse < 1e-12), fit.mirrored
    (True, True)
    """
    X = _check_embedding(X, "angle_rmse", n_components=2)
    theta = _check_target(theta, X.shape[0], "theta", "angle_rmse")
    centred = X - X.mean(axis=0)
    phi = np.arctan2(centred[:, 1], centred[:, 0])

    fits = []
    for mirrored in (False, True):
        a = theta - (-phi if mirrored else phi) / 2
        u = _fit_offset(a)
        residuals = _wrap_half_pi(a - u)
        rmse = float(np.sqrt(np.mean(residuals**2)))
        fits.append(AngleFit(rmse, float(np.mod(2 * u, 2 * np.pi)), mirrored, residuals))
    best = fits[1] if fits[1].rmse < fits[0].rmse else fits[0]
    return best if return_details else best.rmse


# ---------------------------------------------------------------------------- regression


def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS with intercept on centred data: (beta, centred y, residuals)."""
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    beta = np.linalg.lstsq(Xc, yc, rcond=None)[0]
    return beta, yc, yc - Xc @ beta


def regression_vector(X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Coefficient vector of the least-squares fit ``y ~ X beta + b`` (with intercept).

    Parameters
    ----------
    X : (n, d) array_like
        Embedding coordinates, ``n >= 3``.
    y : (n,) array_like
        The parameter to predict (for example the stripe number ``k`` or the noise
        amplitude ``A`` of each image).

    Returns
    -------
    beta : (d,) ndarray
        The coefficients, without the intercept. For a rank-deficient ``X``, the
        minimum-norm solution (``np.linalg.lstsq``).

    Raises
    ------
    ValueError
        On mismatched shapes, ``n < 3`` or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    >>> regression_vector(X, 2 * X[:, 0] - X[:, 1] + 5).round(12)
    array([ 2., -1.])
    """
    X = _check_embedding(X, "regression_vector")
    y = _check_target(y, X.shape[0], "y", "regression_vector")
    return _ols(X, y)[0]


def r_squared(X: ArrayLike, y: ArrayLike) -> float:
    """Coefficient of determination of the least-squares fit of ``y`` on ``X`` (Eq. 13).

    ``R^2 = 1 - SS_res / SS_tot`` for ordinary least squares with an intercept, where
    ``SS_res`` is the residual sum of squares and ``SS_tot = sum_i (y_i - mean(y))**2``.
    It is 1 when ``y`` is an exact affine function of the embedding and 0 when the
    embedding explains none of it. This is a linear measure: for a periodic parameter
    such as the orientation theta, regress ``cos(2 theta)`` and ``sin(2 theta)`` instead
    (see :func:`grid_metrics`).

    Parameters
    ----------
    X : (n, d) array_like
        Embedding coordinates, ``n >= 3``.
    y : (n,) array_like
        The parameter to predict; it must not be constant.

    Returns
    -------
    r2 : float
        In [0, 1] up to rounding (an in-sample OLS fit with an intercept never does worse
        than the mean).

    Raises
    ------
    ValueError
        On mismatched shapes, ``n < 3``, non-finite values, or a constant ``y`` (all values
        equal, for which R^2 is undefined).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> r_squared(X, [1.0, 3.0, 5.0, 7.0])
    1.0
    """
    X = _check_embedding(X, "r_squared")
    y = _check_target(y, X.shape[0], "y", "r_squared")
    return _r2(X, y, "y")


def _r2(X: np.ndarray, y: np.ndarray, name: str) -> float:
    if np.ptp(y) == 0:
        raise ValueError(
            f"The '{name}' parameter is constant, so R^2 is undefined: pass a parameter "
            "that varies across the samples."
        )
    _, yc, residuals = _ols(X, y)
    return 1.0 - float(residuals @ residuals) / float(yc @ yc)


def _direction(X: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """Unit regression vector of ``y``; an error when the fit explains nothing."""
    beta, yc, residuals = _ols(X, y)
    fitted = float(np.linalg.norm(yc - residuals))
    if fitted <= 1e-12 * float(np.linalg.norm(yc)) or not np.any(beta):
        raise ValueError(
            f"The regression vector of '{name}' is zero, so its angle is undefined: the "
            "embedding carries no linear information about it."
        )
    return beta / np.linalg.norm(beta)


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle in degrees between unit vectors ``u`` and ``v``, in [0, 180]."""
    # Kahan's formula: accurate near 0 and 180 degrees, unlike arccos of the dot product.
    angle = 2 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))
    return float(np.degrees(angle))


def regression_angle(X: ArrayLike, y1: ArrayLike, y2: ArrayLike) -> float:
    """Angle between the regression vectors of two parameters (Eq. 14).

    ``arccos(beta_1 . beta_2 / (|beta_1| |beta_2|))`` in degrees, with ``beta`` from
    :func:`regression_vector`. The paper reports the angle between ``beta_A`` and
    ``beta_k`` for the 3-D task: near 90 degrees the embedding encodes the two parameters
    along independent directions; near 0 or 180 degrees they are confounded.

    Parameters
    ----------
    X : (n, d) array_like
        Embedding coordinates, ``n >= 3``.
    y1, y2 : (n,) array_like
        The two parameters.

    Returns
    -------
    angle : float
        In degrees, in [0, 180]. Rescaling either parameter by a positive factor leaves it
        unchanged; a negative factor maps it to ``180 - angle``.

    Raises
    ------
    ValueError
        On mismatched shapes, ``n < 3``, non-finite values, or a zero regression vector
        (fitted values below 1e-12 of the variation of that parameter).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    >>> round(regression_angle(X, X[:, 0], 3 * X[:, 1] + 1), 9)
    90.0
    """
    X = _check_embedding(X, "regression_angle")
    y1 = _check_target(y1, X.shape[0], "y1", "regression_angle")
    y2 = _check_target(y2, X.shape[0], "y2", "regression_angle")
    return _angle_deg(_direction(X, y1, "y1"), _direction(X, y2, "y2"))


# ---------------------------------------------------------------------------- stress


def stress_curve(D: ArrayLike, embeddings: Mapping[int, ArrayLike]) -> dict[int, float]:
    """Kruskal's stress-1 (Eq. 8) of embeddings of several dimensions.

    ``sigma = sqrt(sum_{i<j} (d_ij - dhat_ij)**2 / sum_{i<j} d_ij**2)``, computed by
    :func:`microscale.metric_mds.stress` for each embedding, where ``dhat_ij`` are the
    Euclidean distances between its points.

    Parameters
    ----------
    D : (n, n) array_like
        The target distance matrix (for example CNN texture or power-spectrum distances).
    embeddings : mapping of int to (n, d) array_like
        Embeddings keyed by their dimension ``d``; each must have ``n`` rows and ``d``
        columns.

    Returns
    -------
    stress : dict of int to float
        Stress-1 of each embedding, keyed by dimension in increasing order.

    Raises
    ------
    ValueError
        If ``embeddings`` is empty, a key is not the number of columns of its embedding,
        or an embedding does not have one row per row of ``D`` (and whatever
        :func:`microscale.metric_mds.stress` rejects).
    """
    from microscale.metric_mds import stress

    if not embeddings:
        raise ValueError(
            "The 'embeddings' parameter is empty: pass at least one {dimension: X} entry."
        )
    n = np.shape(D)[0] if np.ndim(D) == 2 else None
    out: dict[int, float] = {}
    for dim in sorted(embeddings):
        X = np.asarray(embeddings[dim])
        if X.ndim != 2 or X.shape[1] != dim:
            raise ValueError(
                f"The embedding under key {dim} must have shape (n_samples, {dim}): key it by "
                f"its dimension. Got shape {X.shape} instead."
            )
        if n is not None and X.shape[0] != n:
            raise ValueError(
                f"The embedding under key {dim} has {X.shape[0]} rows but D has {n}: pass "
                "one point per row of D."
            )
        out[int(dim)] = float(stress(D, X))
    return out


def good_window(x: ArrayLike, error: ArrayLike, *, threshold: float = 0.1) -> tuple[float, float]:
    """The interval of ``x`` over which ``error`` is below ``threshold``.

    Used for the angle task's windows (the paper's Fig. 6: "the power spectrum
    reconstructs the angles only for 2 <~ A <~ 3.5"): ``x`` are the noise amplitudes,
    ``error`` the mean angle RMSE at each. The window starts at the first point below the
    threshold and ends before the next point above it; its edges are interpolated
    linearly in (x, log error) between the neighbouring points, so they do not snap to the
    sampled amplitudes.

    Parameters
    ----------
    x : (m,) array_like
        Increasing sample positions (e.g. amplitudes A), m >= 2.
    error : (m,) array_like
        Positive errors at ``x`` (e.g. the mean RMSE over trials).
    threshold : float, default 0.1
        Errors below it count as good (0.1 rad is about 6 degrees; a random guess of the
        angles gives pi / sqrt(12) = 0.907).

    Returns
    -------
    lo, hi : float
        The window's edges. ``lo = x[0]`` when the first point is good, ``hi = inf`` when
        the last one is; ``(nan, nan)`` when no point is good.

    Raises
    ------
    ValueError
        If the shapes differ, ``x`` is not increasing, an error is not positive and finite,
        or ``threshold`` is not positive.

    Examples
    --------
    >>> lo, hi = good_window([0, 1, 2, 3], [0.2, 0.05, 0.05, 0.2])
    >>> round(lo, 9), round(hi, 9)
    (0.5, 2.5)
    """
    x = _as_finite_float(x, "x", "good_window")
    err = _as_finite_float(error, "error", "good_window")
    if x.ndim != 1 or x.shape != err.shape or x.size < 2:
        raise ValueError(
            "The 'x' and 'error' parameters must be 1-D arrays of the same length >= 2. "
            f"Got shapes {x.shape} and {err.shape} instead."
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError("The 'x' parameter must be strictly increasing: sort the samples.")
    if np.any(err <= 0):
        raise ValueError("The 'error' parameter must be positive (errors are compared in log).")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"The 'threshold' parameter must be > 0. Got {threshold!r} instead.")
    good = err < threshold
    if not good.any():
        return float("nan"), float("nan")
    i = int(np.argmax(good))
    j = i
    while j + 1 < good.size and good[j + 1]:
        j += 1

    def crossing(a: int, b: int) -> float:
        ya, yb = np.log(err[a]), np.log(err[b])
        t = (np.log(threshold) - ya) / (yb - ya)
        return float(x[a] + t * (x[b] - x[a]))

    lo = float(x[0]) if i == 0 else crossing(i - 1, i)
    hi = float("inf") if j == good.size - 1 else crossing(j, j + 1)
    return lo, hi


# ---------------------------------------------------------------------------- 3-D task


def grid_metrics(
    X: ArrayLike,
    params: Mapping[str, ArrayLike],
    *,
    periodic: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """R^2 of each parameter and the angles between their regression vectors (3-D task).

    For the 3-D task of [1]_ (theta, k and A varied on a grid), this gathers
    :func:`r_squared` for each parameter and :func:`regression_angle` for each pair,
    in the order of ``params``.

    Parameters
    ----------
    X : (n, d) array_like
        Embedding coordinates, ``n >= 3``.
    params : mapping of str to (n,) array_like
        The parameters of each image, for example ``{"k": k, "A": A, "theta": theta}``.
        Each must vary.
    periodic : mapping of str to float, optional
        Parameters that are angles, with their period (``{"theta": np.pi}``). A linear
        R^2 is not meaningful for them (theta = 0 and theta = pi are the same
        orientation); for each, the R^2 of ``cos(2 pi p / period)`` and
        ``sin(2 pi p / period)`` is reported as well. Their linear R^2 and regression
        angles are still computed, for completeness.

    Returns
    -------
    metrics : dict
        ``{"r2": {name: float}, "angle_deg": {(name_i, name_j): float},
        "r2_cos": {name: float}, "r2_sin": {name: float}}``, with pairs ``i < j`` in the
        order of ``params`` and ``r2_cos``/``r2_sin`` holding the ``periodic`` parameters
        (empty without them).

    Raises
    ------
    ValueError
        If ``params`` is empty, a ``periodic`` name is not in ``params`` or its period is
        not positive, or as :func:`r_squared` and :func:`regression_angle` raise.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 3))
    >>> m = grid_metrics(X, {"k": X[:, 0] + 5, "A": 2 * X[:, 1]})
    >>> round(m["r2"]["k"], 9), round(m["angle_deg"][("k", "A")], 9)
    (1.0, 90.0)
    """
    if not params:
        raise ValueError("The 'params' parameter is empty: pass at least one {name: values}.")
    periodic = dict(periodic or {})
    for name, period in periodic.items():
        if name not in params:
            raise ValueError(
                f"The periodic parameter {name!r} is not in 'params' (which has "
                f"{sorted(params)}): name one of them."
            )
        if not (np.isfinite(period) and period > 0):
            raise ValueError(
                f"The period of {name!r} must be a positive number. Got {period!r} instead."
            )
    X = _check_embedding(X, "grid_metrics")
    n = X.shape[0]
    values = {name: _check_target(v, n, name, "grid_metrics") for name, v in params.items()}

    r2 = {name: _r2(X, y, name) for name, y in values.items()}
    directions = {name: _direction(X, y, name) for name, y in values.items()}
    angles = {(a, b): _angle_deg(directions[a], directions[b]) for a, b in combinations(values, 2)}
    r2_cos: dict[str, float] = {}
    r2_sin: dict[str, float] = {}
    for name, period in periodic.items():
        phase = 2 * np.pi * values[name] / period
        r2_cos[name] = _r2(X, np.cos(phase), f"cos({name})")
        r2_sin[name] = _r2(X, np.sin(phase), f"sin({name})")
    return {"r2": r2, "angle_deg": angles, "r2_cos": r2_cos, "r2_sin": r2_sin}
