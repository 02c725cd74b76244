"""Seeded random projections ("sketches") of texture vectors.

A texture vector has ``d = 305,888`` entries (1.2 MB in float32); storing it and computing
distances with it cost ``O(d)``. A Gaussian random projection ``S = X R`` to ``k`` a few
thousand dimensions keeps every pairwise distance up to a small random relative error
(Johnson-Lindenstrauss) and cuts storage and distance cost by ``d / k`` (150x at
``k = 2048``). The projection is applied on the workers, batch by batch, as the vectors
are made.

The matrix ``R`` is never stored: it is ``d x k`` (1.2 GB at ``k = 1000`` in float32).
It is regenerated, block by block, from ``(d, n_components, seed, block)``: the rows
``b * block .. (b + 1) * block - 1`` of ``R`` are drawn from
``np.random.default_rng(np.random.SeedSequence([seed, b]))`` as standard normal float32
values scaled by ``1 / sqrt(k)``. Each block's product ``X[:, block] @ R_block`` is a
float32 GEMM; the blocks are summed in float64 and the result rounded to float32 once.
The GEMMs always run on row chunks of the same shape (zero-padded), so a row's result
does not depend on the other rows in the batch: the sketch of a batch equals the
concatenation of the sketches of any split of it, bit for bit (on one machine and
device).

Expected distortion
-------------------
With entries ``N(0, 1/k)``, ``|R^T (x - y)|^2 / |x - y|^2`` is distributed as
``chi^2_k / k``: the squared distance has a relative error of standard deviation
``sqrt(2 / k)``, and the distance itself (a square root) one of about
``1 / sqrt(2 k)``. The median absolute relative error of a distance is then about
``0.674 / sqrt(2 k)`` (0.015 at ``k = 1024``, 0.0075 at ``k = 4096``), and the largest
over ``m`` pairs about ``sqrt(2 ln(2 m)) / sqrt(2 k)``. :func:`distortion` measures it;
``benchmarks/bench_sketch.py`` reports it with the change in stress and R^2 on the
paper's 3-D task.

Cost
----
Generating ``R`` costs ``d k`` normal draws (measured: 0.24 s per block of 16,384 x
1,024, so about 4.6 s per 1,024 components at ``d = 305,888``); the GEMM adds ``2 n d k``
flops on row chunks padded to 64 rows. A worker sketches batch after batch with the same
projection, so the last projection is kept in memory (on the GEMM's device) when it takes
at most ``cache_bytes`` (``d k 4`` bytes: 2.5 GB at ``k = 2048``; by default
:data:`CACHE_BYTES`, or the environment variable ``MICROSCALE_SKETCH_CACHE_BYTES`` when it
is set, read at each call; 0 turns the cache off).
Beyond it, ``R`` is regenerated per call, so sketch large batches.

Precision: sketching in float32 GEMMs (blocks summed in float64) gives the same distances
as an exact float64 product of the same ``R`` to a relative error of at most 8e-7
(measured on the 3-D task's texture vectors at ``k = 1024``), far below the projection's
own error.

References
----------
W. B. Johnson, J. Lindenstrauss, "Extensions of Lipschitz mappings into a Hilbert space",
Contemp. Math. 26, 189-206 (1984), doi:10.1090/conm/026/737400.

D. Achlioptas, "Database-friendly random projections: Johnson-Lindenstrauss with binary
coins", J. Comput. Syst. Sci. 66, 671-687 (2003), doi:10.1016/S0022-0000(03)00025-4.
"""

from __future__ import annotations

import functools
import math
import numbers
import os

import numpy as np
import torch
from numpy.typing import ArrayLike

from microscale._validation import (
    as_real_rows,
    check_int,
    check_non_negative_int,
    check_positive_int,
)
from microscale.device import resolve_device
from microscale.distance import ieee_fp32_matmul, pairwise_distances

__all__ = ["distortion", "projection_block", "sketch"]

_ROW_CHUNK = 64  # rows per GEMM; every GEMM has this many rows (zero-padded)
#: Largest projection (bytes, ``d * k * 4``) kept in memory between calls of :func:`sketch`,
#: by default (see its ``cache_bytes``).
CACHE_BYTES = 4 * 2**30
#: Environment variable that sets the default of ``cache_bytes`` (read at each call).
CACHE_BYTES_VARIABLE = "MICROSCALE_SKETCH_CACHE_BYTES"


def _cache_budget(cache_bytes: int | None) -> int:
    """``cache_bytes``, else the environment's budget, else :data:`CACHE_BYTES`."""
    if cache_bytes is not None:
        return check_int(cache_bytes, "cache_bytes", minimum=0)
    value = os.environ.get(CACHE_BYTES_VARIABLE)
    return CACHE_BYTES if value is None else int(value)


def projection_block(
    n_features: int, n_components: int, *, seed: int = 0, block: int = 16384, index: int
) -> np.ndarray:
    """One row block of the implicit projection matrix ``R``, (rows, n_components) float32.

    Rows ``index * block`` to ``min((index + 1) * block, n_features) - 1`` of ``R``,
    drawn from ``np.random.default_rng(np.random.SeedSequence([seed, index]))`` as standard
    normals scaled by ``1 / sqrt(n_components)``.

    Parameters
    ----------
    n_features : int
        ``d``, the length of the vectors to project.
    n_components : int
        ``k``, the length of the sketches.
    seed : int, default 0
        Seed of the projection.
    block : int, default 16384
        Rows of ``R`` per block.
    index : int
        Block number, ``0 <= index < ceil(n_features / block)``.

    Returns
    -------
    (rows, n_components) ndarray of float32

    Examples
    --------
    >>> projection_block(10, 4, block=8, index=1).shape
    (2, 4)
    """
    d = check_positive_int(n_features, "n_features")
    k = check_positive_int(n_components, "n_components")
    seed = check_non_negative_int(seed, "seed")
    block = check_positive_int(block, "block")
    n_blocks = -(-d // block)
    if (
        isinstance(index, bool)
        or not isinstance(index, numbers.Integral)
        or not (0 <= index < n_blocks)
    ):
        raise ValueError(
            f"The 'index' parameter must be an int in [0, {n_blocks}) for n_features={d} "
            f"and block={block}. Got {index!r} instead."
        )
    rows = min(block, d - int(index) * block)
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(index)]))
    R = rng.standard_normal((rows, k), dtype=np.float32)
    R *= np.float32(1.0 / math.sqrt(k))
    return R


def sketch(
    X: ArrayLike,
    *,
    n_components: int = 2048,
    seed: int = 0,
    block: int = 16384,
    device: str | torch.device | None = None,
    cache_bytes: int | None = None,
) -> np.ndarray:
    """Seeded Gaussian random projection of vectors, (n, d) -> (n, n_components) float32.

    ``S = X R`` with ``R`` a ``d x n_components`` matrix of ``N(0, 1/n_components)``
    entries that is regenerated block by block from ``seed`` (see
    :func:`projection_block` and the module docstring), never stored. Distances between
    sketches estimate those between the vectors with a relative error of standard
    deviation about ``1 / sqrt(2 n_components)``.

    Parameters
    ----------
    X : (n, d) array_like
        Vectors, one per row (texture vectors: ``d = 305,888``). They are rounded to
        float32 for the GEMMs.
    n_components : int, default 2048
        ``k``, the length of each sketch.
    seed : int, default 0
        Seed of the projection: the same ``(d, n_components, seed, block)`` gives the same
        projection in every process. Sketches are comparable only when made with the same
        four values.
    block : int, default 16384
        Rows of ``R`` generated at a time (memory: ``block * n_components * 4`` bytes).
    device : str or torch.device, optional
        Torch device of the GEMMs; default CUDA when available, else CPU. ``R`` is always
        generated by numpy on the CPU, so the projection does not depend on the device.
    cache_bytes : int, optional
        Keep the projection in memory for the next call when it takes at most this many
        bytes (``d * n_components * 4``); 0 never keeps it. Default: the environment
        variable ``MICROSCALE_SKETCH_CACHE_BYTES`` when set, else :data:`CACHE_BYTES`.
        Only speed depends on it, never the result.

    Returns
    -------
    S : (n, n_components) ndarray of float32
        Row ``i`` depends only on ``X[i]``: sketching a batch equals concatenating the
        sketches of its parts, exactly.

    Examples
    --------
    >>> X = np.ones((3, 100), dtype=np.float32)
    >>> S = sketch(X, n_components=16, device="cpu")
    >>> S.shape, S.dtype, bool((S[0] == S[2]).all())
    ((3, 16), dtype('float32'), True)
    """
    arr = as_real_rows(X, "X")
    k = check_positive_int(n_components, "n_components")
    seed = check_non_negative_int(seed, "seed")
    block = check_positive_int(block, "block")
    budget = _cache_budget(cache_bytes)
    if not np.isfinite(arr).all():
        raise ValueError("X contains NaN or infinite values. Remove or replace them first.")
    dev = resolve_device(device)
    n, d = arr.shape
    if d == 0:
        raise ValueError("X has 0 columns: there is nothing to project.")
    n_chunks = -(-n // _ROW_CHUNK)
    acc = torch.zeros((n_chunks * _ROW_CHUNK, k), dtype=torch.float64, device=dev)
    buf = np.zeros((n_chunks * _ROW_CHUNK, min(block, d)), dtype=np.float32)
    blocks = _cached_projection(d, k, seed, block, dev) if d * k * 4 <= budget else None
    with ieee_fp32_matmul(), torch.no_grad():
        for b in range(-(-d // block)):
            c0 = b * block
            c1 = min(c0 + block, d)
            R = blocks[b] if blocks is not None else _block_tensor(d, k, seed, block, b, dev)
            cols = buf[:, : c1 - c0]
            cols[:n] = arr[:, c0:c1]
            xb = torch.from_numpy(cols).to(dev)
            for r0 in range(0, n_chunks * _ROW_CHUNK, _ROW_CHUNK):
                rows = slice(r0, r0 + _ROW_CHUNK)
                acc[rows] += torch.mm(xb[rows], R).to(torch.float64)
    return acc[:n].to(torch.float32).cpu().numpy()


def _block_tensor(d: int, k: int, seed: int, block: int, b: int, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(projection_block(d, k, seed=seed, block=block, index=b)).to(dev)


@functools.lru_cache(maxsize=1)
def _cached_projection(
    d: int, k: int, seed: int, block: int, dev: torch.device
) -> tuple[torch.Tensor, ...]:
    """Every row block of ``R`` for one projection, kept for the next call (one at a time)."""
    return tuple(_block_tensor(d, k, seed, block, b, dev) for b in range(-(-d // block)))


def distortion(X: ArrayLike, S: ArrayLike) -> dict[str, float]:
    """How much a sketch distorts pairwise distances.

    For all pairs ``i < j`` with ``|x_i - x_j| > 0``, the relative error
    ``e_ij = | |s_i - s_j| - |x_i - x_j| | / |x_i - x_j|``, both distances computed by
    :func:`microscale.distance.pairwise_distances`.

    Parameters
    ----------
    X : (n, d) array_like
        The original vectors, ``n >= 2``.
    S : (n, k) array_like
        Their sketches (or any other approximation), one row per row of ``X``.

    Returns
    -------
    dict
        ``"median"``, ``"p99"``, ``"max"`` and ``"mean"`` of ``e_ij``; ``"n_pairs"``, the
        number of pairs used; ``"jl_sigma"``, the expected standard deviation
        ``1 / sqrt(2 k)`` of the signed relative error for a Gaussian projection to ``k``
        dimensions (the median of ``e_ij`` is then about ``0.674 * jl_sigma``).

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((20, 500))
    >>> err = distortion(X, sketch(X, n_components=256, device="cpu"))
    >>> bool(err["median"] < 3 * err["jl_sigma"])
    True
    """
    xa = as_real_rows(X, "X")
    sa = as_real_rows(S, "S")
    if xa.shape[0] != sa.shape[0]:
        raise ValueError(
            f"X and S must have the same number of rows (one sketch per vector). Got "
            f"{xa.shape[0]} and {sa.shape[0]} instead."
        )
    n = xa.shape[0]
    if n < 2:
        raise ValueError(f"distortion needs at least 2 vectors to form a pair. Got {n} instead.")
    DX = pairwise_distances(xa)
    DS = pairwise_distances(sa)
    iu = np.triu_indices(n, k=1)
    dx = DX[iu]
    ds = DS[iu]
    keep = dx > 0
    if not keep.any():
        raise ValueError("All rows of X are identical: no pair has a distance to compare.")
    err = np.abs(ds[keep] - dx[keep]) / dx[keep]
    return {
        "median": float(np.median(err)),
        "p99": float(np.percentile(err, 99)),
        "max": float(err.max()),
        "mean": float(err.mean()),
        "n_pairs": int(keep.sum()),
        "jl_sigma": 1.0 / math.sqrt(2.0 * sa.shape[1]),
    }
