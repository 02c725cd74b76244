"""How good a map is when its (n, n) distance matrix was never built.

:func:`sampled_stress` estimates Kruskal's stress-1 of an embedding from the exact
distances among a uniform random sample of ``s`` of its points (all ``s (s - 1) / 2``
pairs among them), with a confidence interval. The estimate is the ratio of the pair
sums, ``sqrt(sum (d - dhat)^2 / sum d^2)`` over the sampled pairs: a ratio of two
U-statistics of the sample, consistent for the stress of the whole matrix. Its standard
error is the delete-one-point jackknife (the pairs share points, so they are not
independent; leaving out a point leaves out its ``s - 1`` pairs), and the interval is the
normal one, ``estimate +- z * se``.

The k-NN preservation of an embedding (the other figure a map reports without the matrix)
is :func:`microscale.neighbors.knn_preservation`.

References
----------
.. [1] J. B. Kruskal, "Multidimensional scaling by optimizing goodness of fit to a
   nonmetric hypothesis", Psychometrika 29, 1-27 (1964), doi:10.1007/BF02289565.
.. [2] B. Efron and C. Stein, "The jackknife estimate of variance", Ann. Statist. 9,
   586-596 (1981), doi:10.1214/aos/1176345462.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from microscale._validation import check_positive_int

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_STRESS_SAMPLE",
    "StressEstimate",
    "sample_points",
    "sampled_stress",
]

#: Points sampled for the stress estimate by default: 2000, so 1,999,000 pairs. The
#: distances among them cost ``s^2 d`` flops (16 GFLOP for 2048-long sketches) and
#: ``s d`` bytes of rows; on texture-like data the interval is then about +-1 % of the
#: stress (``benchmarks/bench_pipeline_scale.py --distances landmarks``).
DEFAULT_STRESS_SAMPLE = 2000
#: Confidence level of the interval.
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class StressEstimate:
    """A stress-1 estimated from a sample of pairs, with its confidence interval.

    Attributes
    ----------
    stress : float
        The estimate.
    low, high : float
        The confidence interval (clipped at 0).
    se : float
        Its jackknife standard error.
    n_points, n_pairs : int
        The sampled points and the pairs among them.
    confidence : float
    """

    stress: float
    low: float
    high: float
    se: float
    n_points: int
    n_pairs: int
    confidence: float


def sample_points(n: int, size: int, *, random_state: int | np.random.Generator | None = 0):
    """``min(size, n)`` distinct points of ``n``, uniformly at random, sorted.

    Examples
    --------
    >>> sample_points(10, 4, random_state=0).tolist()
    [2, 4, 5, 7]
    """
    n = check_positive_int(n, "n")
    size = check_positive_int(size, "size")
    rng = np.random.default_rng(random_state)
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def sampled_stress(
    D_sample: ArrayLike,
    embeddings: Sequence[ArrayLike],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[StressEstimate]:
    """Stress-1 of embeddings from the distances among a random sample of their points.

    Parameters
    ----------
    D_sample : (s, s) array_like
        Exact distances among ``s >= 3`` points sampled uniformly without replacement
        (e.g. :func:`sample_points`), symmetric with a zero diagonal.
    embeddings : sequence of (s, D) array_like
        The embedded coordinates of the same points, in the same order (one array per
        embedding: several dimensions share one sample).
    confidence : float, optional
        Level of the interval (default 0.95).

    Returns
    -------
    list of StressEstimate
        One per embedding. When the sample is the whole set of points, the estimate is
        the exact stress.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> est = sampled_stress(cdist(x, x), [x[:, :2]])[0]
    >>> est.low <= est.stress <= est.high, est.n_pairs
    (True, 780)
    """
    from scipy.spatial.distance import cdist
    from scipy.stats import norm

    D = np.asarray(D_sample, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 3:
        raise ValueError(
            f"The 'D_sample' array must be (s, s) with s >= 3 sampled points. Got shape "
            f"{D.shape} instead."
        )
    if not np.isfinite(D).all() or (D < 0).any():
        raise ValueError("The 'D_sample' array must hold finite, non-negative distances.")
    if not 0 < confidence < 1:
        raise ValueError(
            f"The 'confidence' parameter must be in (0, 1). Got {confidence!r} instead."
        )
    s = D.shape[0]
    z = float(norm.ppf(0.5 + confidence / 2))
    off = ~np.eye(s, dtype=bool)
    W = np.where(off, D * D, 0.0)
    w_rows = W.sum(axis=1)
    w_all = w_rows.sum() / 2
    if w_all == 0:
        raise ValueError("Every sampled distance is 0: the stress is undefined.")
    out = []
    for X in embeddings:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != s:
            raise ValueError(
                f"Each embedding must be ({s}, D), one row per sampled point. Got shape "
                f"{X.shape} instead."
            )
        E = cdist(X, X)
        E -= D
        np.square(E, out=E)
        E[~off] = 0.0
        e_rows = E.sum(axis=1)
        e_all = e_rows.sum() / 2
        theta = math.sqrt(e_all / w_all)
        loo = np.sqrt((e_all - e_rows) / (w_all - w_rows))  # each point left out
        se = math.sqrt((s - 1) / s * float(np.sum((loo - loo.mean()) ** 2)))
        out.append(
            StressEstimate(
                stress=theta,
                low=max(0.0, theta - z * se),
                high=theta + z * se,
                se=se,
                n_points=s,
                n_pairs=s * (s - 1) // 2,
                confidence=float(confidence),
            )
        )
    return out
