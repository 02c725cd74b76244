"""Exact pairwise Euclidean distances between texture vectors.

Texture vectors (Sec. III A of the paper) are long, ``d = 305,888``, and all of the same
sign: every entry is a Gram-matrix entry of ReLU features. Two vectors are therefore
strongly correlated, and near-duplicates (tiles of one micrograph, images that differ by a
seed) are common. The textbook expansion ``|x|^2 + |y|^2 - 2 x.y`` in float32, which is
what a GEMM-based ``cdist`` computes, then subtracts two nearly equal numbers of size
``|x|^2`` and loses every digit: relative errors of order 1 at a relative separation of
1e-3. This module computes the same product at float32 GEMM speed while keeping every
distance within a relative error of 1e-6 of the exact one.

One block kernel, :func:`block_sq_distances`, does the work for one pair of row blocks;
:func:`pairwise_distances` is a blocked driver over it, and the out-of-core path (Dask
tasks that each read two row blocks from a Zarr array) calls the same kernel.

How one block pair is computed
------------------------------
Let ``c`` be a fixed vector common to all rows (the mean of all rows: any common vector
gives the same exact distances, the mean makes the centred rows ``xc = x - c`` short), and
``F = (|xc|^2 + |yc|^2) / |x - y|^2`` the *cancellation factor* of a pair: the factor by
which the expansion amplifies the error of the cross term. ``F`` is about 1 for vectors
spread around the mean, and large for near-duplicates far from it.

1. **Float32 cross term.** The rows are centred and rounded to float32 once
   (``fl32(x - c)``; a single correctly rounded subtraction), their squared norms are
   summed in float64, and the cross term ``xc . yc`` is a float32 GEMM (MKL or cuBLAS,
   TF32 switched off) over panels of ``1024`` columns whose results are accumulated in
   float64. Panelling matters: over all 305,888 columns the float32 accumulation alone
   has a relative error of about 2e-6, so even a modest ``F = 4`` would break the
   requirement; over 1024-column panels it is 25 to 100 times smaller at this ``d``.
2. **Float64 safety net.** A pair is accepted from step 1 only if its estimated ``F`` is at
   most ``F1(d)`` (see the error bound below; ``F1`` is 9.1 at ``d = 305,888``). The
   other pairs of the block are recomputed from the raw rows, centred in float64, by a
   float64 GEMM on just the rows and columns that hold them (or, when there are few, by
   step 3 directly). This catches near-duplicates inside a widely spread set, where a
   global mean does not help.
3. **Direct differences.** Pairs whose float64 estimate still has ``F > F2(d)`` (about
   6e8 at ``d = 305,888``: relative separations below about 1e-4 of their distance to the
   centre, and exact duplicates) are computed as ``sum((x - y)**2)`` from the raw rows in
   float64. Exact duplicates therefore give exactly 0.

With ``precision="float64"`` step 1 is a float64 GEMM of the rows centred in float64 (no
float32 at all), followed by step 3. For ``d`` between about 70 and 15,000 ``F1(d)`` is
below 2, so ``"mixed"`` would send most pairs to step 2 anyway and computes in float64
from the start.

Error bound
-----------
For a pair accepted at step 1 the relative error of the distance is at most

    ``2**-24 * sqrt(2 F)  +  gamma32(d) * F / 2``

The first term is the float32 rounding of the centred rows (a deterministic bound: the
rounded difference is within ``2**-24 (|xc| + |yc|)`` of the exact one). The second is the
float32 GEMM, with the error model ``gamma32(d) = C * 2**-24 * min(1024, d) / sqrt(d)``:
rounding errors accumulate along each panel and average out across the float64 sum of
``d / 1024`` panels. ``C = 0.5`` is four times the largest constant measured (0.13, same
at d = 1,000, 20,000 and 305,888, worst case of summands of one sign); the model is
statistical, not a worst-case bound, which for a length-``d`` float32 sum would be
useless (``d * 2**-24 = 0.02``). ``F1(d) = 5e-7 / gamma32(d)``, capped at 32, keeps the
sum of both terms at most 7.3e-7 (at ``d = 305,888``: ``F1 = 9.1``, bound 5e-7). Pairs
accepted at step 2 satisfy the same bound with float64's ``2**-53`` (at most 2.5e-7);
pairs from step 3 are accurate to float64 rounding. Squared distances are clipped at 0
(step 3 makes the clip inactive in practice), so no distance is negative or NaN.

Speed
-----
On data where all ``F`` are below ``F1`` (a cluster of near-duplicates with its own
mean, ordinary spread-out data) the cost is that of the float32 GEMM plus about 5 %
(panel accumulation) and one pass over the rows (centring, norms). Pairs that need step
2 cost a float64 GEMM on top (about half the float32 speed on CPUs), pairs in step 3
about ``d`` memory-bound operations each (about 3,000 pairs/s at ``d = 305,888`` on a
2-core CPU), so throughput degrades gracefully when much of the data is made of tight
clusters far from the common mean.

References
----------
N. Lubbers, T. Lookman, K. Barros, "Inferring low-dimensional microstructure
representations using convolutional neural networks", Phys. Rev. E 96, 052111 (2017),
doi:10.1103/PhysRevE.96.052111.

N. J. Higham, T. Mary, "A new approach to probabilistic rounding error analysis",
SIAM J. Sci. Comput. 41, A2815 (2019), doi:10.1137/18M1226312.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["block_sq_distances", "cancellation_limits", "pairwise_distances"]

Precision = Literal["mixed", "float64"]

#: Default number of rows per block; chosen by ``benchmarks/bench_distances.py``.
DEFAULT_BLOCK_SIZE = 512

_PANEL32 = 1024  # columns per float32 GEMM panel (accumulated in float64)
_PANEL64 = 8192  # columns per panel when re-centring rows in float64 (step 2)
_ERROR_MODEL_C = 0.5  # constant of the GEMM error model, 4x the measured maximum
_GEMM_BUDGET = 5e-7  # gamma * F allowed for the cross term: relative error of d^2
_F1_CAP = 32.0  # keeps 2**-24 sqrt(2 F1) + budget / 2 below 7.3e-7
_MIN_F1 = 2.0  # below this most pairs would go to step 2: use float64 from the start
_SPLIT_ROWS = 128  # diagonal blocks are halved recursively down to this many rows


# --- the error model -------------------------------------------------------------------


def _gemm_error(d: int, unit_roundoff: float, panel: int) -> float:
    """Relative error model of a dot product of length d over panels of `panel` columns."""
    return _ERROR_MODEL_C * unit_roundoff * min(panel, d) / math.sqrt(d)


def cancellation_limits(d: int) -> tuple[float, float]:
    """Largest cancellation factors accepted from the float32 and the float64 product.

    A pair with cancellation factor ``F = (|x - c|^2 + |y - c|^2) / |x - y|^2`` is taken
    from the float32 product if ``F <= F1``, from the float64 product if ``F <= F2``, and
    computed from direct differences otherwise (see the module docstring).

    Parameters
    ----------
    d : int
        Length of the vectors.

    Returns
    -------
    f1, f2 : float
        The limits ``F1(d)`` and ``F2(d)``.

    Examples
    --------
    >>> f1, f2 = cancellation_limits(305_888)
    >>> round(f1, 1), f"{f2:.0e}"
    (9.1, '6e+08')
    """
    if d < 1:
        raise ValueError(f"The vector length d must be a positive int. Got {d} instead.")
    f1 = min(_F1_CAP, _GEMM_BUDGET / _gemm_error(d, 2.0**-24, _PANEL32))
    f2 = _GEMM_BUDGET / _gemm_error(d, 2.0**-53, d)  # float64: one accumulation over d
    return f1, f2


# --- global torch state, scoped --------------------------------------------------------

_PRECISION_LOCK = threading.Lock()
_PRECISION_USERS = 0
_PRECISION_SAVED: tuple[str, str] = ("none", "none")


@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """Run float32 matmuls in full IEEE float32 (no TF32, no bf16) and restore afterwards.

    The setting is process-global in torch; a counter under a lock makes nested and
    concurrent calls (Dask threads) restore the caller's setting exactly once.
    """
    global _PRECISION_USERS, _PRECISION_SAVED
    cuda_mm = torch.backends.cuda.matmul
    cpu_mm = torch.backends.mkldnn.matmul
    with _PRECISION_LOCK:
        if _PRECISION_USERS == 0:
            _PRECISION_SAVED = (cuda_mm.fp32_precision, cpu_mm.fp32_precision)
            cuda_mm.fp32_precision = "ieee"
            cpu_mm.fp32_precision = "ieee"
        _PRECISION_USERS += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_USERS -= 1
            if _PRECISION_USERS == 0:
                cuda_mm.fp32_precision, cpu_mm.fp32_precision = _PRECISION_SAVED


# --- validation ------------------------------------------------------------------------


def _as_rows(a: ArrayLike, name: str) -> np.ndarray:
    """Validate shape and dtype; float32 stays float32, other real types become float64."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_vectors, d). Got {arr.ndim} dimensions "
            f"(shape {arr.shape}) instead."
        )
    if arr.shape[0] < 1:
        raise ValueError(f"{name} has no rows. Pass at least one vector.")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has rows of length 0. Pass vectors with at least one entry.")
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "biuf":
        return np.ascontiguousarray(arr, dtype=np.float64)
    raise ValueError(
        f"{name} has dtype {arr.dtype}; distances need real numbers. "
        "Pass a float32 or float64 array."
    )


def _check_precision(precision: str) -> None:
    if precision not in ("mixed", "float64"):
        raise ValueError(
            f"The 'precision' parameter must be 'mixed' or 'float64'. Got {precision!r} instead."
        )


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"The 'device' parameter must name a torch device such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"The device {device!r} was requested but CUDA is not available. "
            "Pass device='cpu' or device=None."
        )
    return dev


def _raise_nonfinite(arr: np.ndarray, name: str, offset: int) -> None:
    """Name the first row of `arr` that is not finite, or say that it is too large."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0]) + offset
        raise ValueError(
            f"Row {row} of {name} contains NaN or inf; texture vectors must be finite."
        )
    raise ValueError(
        f"{name} holds values too large to compute with (beyond float32's 3.4e38 after "
        "centring, or squared norms beyond float64's 1.8e308). Rescale the vectors."
    )


# --- the kernel ------------------------------------------------------------------------
#
# On the CPU the element-wise work (centring, norms, differences) is done row by row in
# numpy, which runs on one thread, and only the GEMMs go through torch (MKL). torch's
# parallel element-wise kernels synchronise all threads at every call; when the cores are
# shared (a Dask worker running several tasks, other processes) each such call can stall
# for a scheduler time slice, which made a row-by-row torch loop 100x slower. On a GPU
# everything is torch.

_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}
_GPU_ROWS = 64  # rows centred at once on a GPU
_BATCH_ELEMENTS = 2**25  # float32 partial products held at once by _cross (128 MB)


@dataclass
class _Rows:
    """One block of rows, prepared once and reused for every block pair it takes part in.

    On the CPU the tensors share memory with numpy arrays (``tensor.numpy()``).
    """

    raw: torch.Tensor  # (b, d) as given, float32 or float64
    centred: torch.Tensor  # (b, d) fl(raw - c) in the working dtype (float32 or float64)
    sq_norms: torch.Tensor  # (b,) float64, squared norms of `centred`


@dataclass(frozen=True)
class _Centre:
    """The common centre ``c``: float64 in numpy, and on the device."""

    array: np.ndarray
    tensor: torch.Tensor


def _working_dtype(d: int, precision: Precision) -> torch.dtype:
    if precision == "float64" or cancellation_limits(d)[0] < _MIN_F1:
        return torch.float64
    return torch.float32


def _prepare(
    raw: np.ndarray,
    centre: _Centre,
    dtype: torch.dtype,
    device: torch.device,
    *,
    name: str,
    offset: int = 0,
) -> _Rows:
    """Centre the rows once: ``centred = fl(raw - c)``; squared norms in float64.

    For float32 input and a float32 working type the centre is first rounded to float32,
    so that ``raw - c`` is one correctly rounded float32 subtraction (any common vector is
    a valid centre; rounding it changes no distance). Otherwise the subtraction is done in
    float64 and rounded once to the working type.
    """
    if not raw.flags.writeable:  # torch.from_numpy warns on read-only memory; never written
        raw = raw.copy()
    n = raw.shape[0]
    round_centre = raw.dtype == np.float32 and dtype == torch.float32
    if device.type == "cpu":
        centred = np.empty(raw.shape, dtype=_NUMPY_DTYPE[dtype])
        sq_norms = np.empty(n, dtype=np.float64)
        c = centre.array.astype(np.float32) if round_centre else centre.array
        with np.errstate(over="ignore"):  # overflow to inf is reported below, by row
            for i in range(n):
                np.subtract(raw[i], c, out=centred[i], casting="same_kind")
                row = centred[i].astype(np.float64, copy=False)
                sq_norms[i] = np.einsum("i,i->", row, row)
        rows = _Rows(torch.from_numpy(raw), torch.from_numpy(centred), torch.from_numpy(sq_norms))
    else:
        raw_t = torch.from_numpy(raw).to(device)
        c_t = centre.tensor.float() if round_centre else centre.tensor
        centred_t = torch.empty(raw.shape, dtype=dtype, device=device)
        sq_t = torch.empty(n, dtype=torch.float64, device=device)
        for s in range(0, n, _GPU_ROWS):
            part = centred_t[s : s + _GPU_ROWS]
            part.copy_(raw_t[s : s + _GPU_ROWS].to(c_t.dtype) - c_t)
            part64 = part.double()
            sq_t[s : s + _GPU_ROWS] = torch.einsum("ij,ij->i", part64, part64)
        rows = _Rows(raw_t, centred_t, sq_t)
    if not bool(torch.isfinite(rows.sq_norms).all()):
        _raise_nonfinite(raw, name, offset)
    return rows


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in float64; float32 operands go through panels accumulated in float64.

    The panels are batched (``torch.bmm`` over up to ``_BATCH_ELEMENTS`` partial products
    at a time, then one float64 sum): few large calls rather than one small GEMM per
    panel, which matters when threads are shared.
    """
    if a.dtype == torch.float64:
        return a @ b.T
    (bx, d), by = a.shape, b.shape[0]
    n_panels = d // _PANEL32
    full = n_panels * _PANEL32
    out = torch.zeros(bx, by, dtype=torch.float64, device=a.device)
    if n_panels:
        a_p = a[:, :full].view(bx, n_panels, _PANEL32).transpose(0, 1)
        b_p = b[:, :full].view(by, n_panels, _PANEL32).transpose(0, 1)
        step = max(1, _BATCH_ELEMENTS // (bx * by))
        for s in range(0, n_panels, step):
            partial = torch.bmm(a_p[s : s + step], b_p[s : s + step].transpose(1, 2))
            out += partial.sum(dim=0, dtype=torch.float64)
    if full < d:
        out += a[:, full:] @ b[:, full:].T
    return out


def _float64_sub_block(
    x_raw: torch.Tensor,
    y_raw: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    centre: _Centre,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: squared distances and ``|xc|^2 + |yc|^2`` for ``x_raw[rows]`` x ``y_raw[cols]``.

    The rows are gathered and centred in float64 panel by panel, so the extra memory is
    ``(len(rows) + len(cols)) * 8192 * 8`` bytes whatever ``d``.
    """
    dev = x_raw.device
    cross = torch.zeros(rows.numel(), cols.numel(), dtype=torch.float64, device=dev)
    nx = torch.zeros(rows.numel(), dtype=torch.float64, device=dev)
    ny = torch.zeros(cols.numel(), dtype=torch.float64, device=dev)
    on_cpu = dev.type == "cpu"
    if on_cpu:
        x_np, y_np, r_np, c_np = x_raw.numpy(), y_raw.numpy(), rows.numpy(), cols.numpy()
    for s in range(0, x_raw.shape[1], _PANEL64):
        e = s + _PANEL64
        if on_cpu:
            xp_np = np.subtract(x_np[r_np, s:e], centre.array[s:e], dtype=np.float64)
            yp_np = np.subtract(y_np[c_np, s:e], centre.array[s:e], dtype=np.float64)
            nx += torch.from_numpy(np.einsum("ij,ij->i", xp_np, xp_np))
            ny += torch.from_numpy(np.einsum("ij,ij->i", yp_np, yp_np))
            xp, yp = torch.from_numpy(xp_np), torch.from_numpy(yp_np)
        else:
            xp = x_raw[:, s:e].index_select(0, rows).double() - centre.tensor[s:e]
            yp = y_raw[:, s:e].index_select(0, cols).double() - centre.tensor[s:e]
            nx += torch.einsum("ij,ij->i", xp, xp)
            ny += torch.einsum("ij,ij->i", yp, yp)
        cross.addmm_(xp, yp.T)
    scale = nx[:, None] + ny[None, :]
    return scale - 2.0 * cross, scale


def _direct(
    x_raw: torch.Tensor, y_raw: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor
) -> torch.Tensor:
    """Step 3: ``sum((x_i - y_j)**2)`` in float64 for the listed pairs."""
    order = torch.argsort(ii, stable=True).cpu()
    pairs = zip(ii.cpu()[order].tolist(), jj.cpu()[order].tolist(), strict=True)
    out = np.empty(ii.numel(), dtype=np.float64)
    if x_raw.device.type == "cpu":
        x_np, y_np = x_raw.numpy(), y_raw.numpy()
        last, x64 = -1, None
        for k, (i, j) in zip(order.tolist(), pairs, strict=True):
            if i != last:
                last, x64 = i, x_np[i].astype(np.float64)
            diff = np.subtract(y_np[j], x64, dtype=np.float64)
            out[k] = np.einsum("i,i->", diff, diff)
        return torch.from_numpy(out)
    result = torch.empty(ii.numel(), dtype=torch.float64, device=x_raw.device)
    for k, (i, j) in zip(order.tolist(), pairs, strict=True):
        diff = y_raw[j].double() - x_raw[i].double()
        result[k] = torch.dot(diff, diff)
    return result


def _rows_slice(r: _Rows, sl: slice) -> _Rows:
    return _Rows(raw=r.raw[sl], centred=r.centred[sl], sq_norms=r.sq_norms[sl])


def _block(xr: _Rows, yr: _Rows | None, centre: _Centre) -> torch.Tensor:
    """Squared distances of one block pair, float64 on the device; ``yr=None``: xr with itself.

    For ``yr=None`` the block is exactly symmetric with an exactly zero diagonal. It is
    split in halves recursively (two diagonal halves, one off-diagonal quarter) down to
    ``_SPLIT_ROWS`` rows, which avoids most of the work on the mirrored lower triangle:
    a 512-row diagonal block costs 0.62 of a full 512 x 512 block pair instead of 1.
    """
    if yr is not None:
        return _pair(xr, yr, centre, same=False)
    b = xr.raw.shape[0]
    if b <= _SPLIT_ROWS:
        return _pair(xr, xr, centre, same=True)
    h = b // 2
    top, bottom = _rows_slice(xr, slice(0, h)), _rows_slice(xr, slice(h, b))
    out = torch.empty(b, b, dtype=torch.float64, device=xr.raw.device)
    out[:h, :h] = _block(top, None, centre)
    out[h:, h:] = _block(bottom, None, centre)
    off = _pair(top, bottom, centre, same=False)
    out[:h, h:] = off
    out[h:, :h] = off.T
    return out


def _pair(xr: _Rows, y: _Rows, centre: _Centre, *, same: bool) -> torch.Tensor:
    """Steps 1 to 3 for one block pair; ``same``: ``y`` is ``xr`` (keep the upper triangle)."""
    d = xr.raw.shape[1]
    f1, f2 = cancellation_limits(d)
    first_limit = f1 if xr.centred.dtype == torch.float32 else f2
    with _ieee_fp32_matmul():
        scale = xr.sq_norms[:, None] + y.sq_norms[None, :]
        d2 = scale - 2.0 * _cross(xr.centred, y.centred)
        suspect = d2 * first_limit <= scale  # F > first_limit (and every d2 <= 0)
        if same:
            suspect = torch.triu(suspect, diagonal=1)
        ii, jj = torch.nonzero(suspect, as_tuple=True)
        if ii.numel() and xr.centred.dtype == torch.float32:
            rows, ri = torch.unique(ii, return_inverse=True)
            cols, ci = torch.unique(jj, return_inverse=True)
            if ii.numel() > rows.numel() + cols.numel():  # a GEMM beats per-pair work
                sub, sub_scale = _float64_sub_block(xr.raw, y.raw, rows, cols, centre)
                d2[ii, jj] = sub[ri, ci]
                keep = sub[ri, ci] * f2 <= sub_scale[ri, ci]
                ii, jj = ii[keep], jj[keep]
        if ii.numel():
            d2[ii, jj] = _direct(xr.raw, y.raw, ii, jj)
    d2.clamp_(min=0.0)
    if same:
        upper = torch.triu(d2, diagonal=1)
        d2 = upper + upper.T
    return d2


def block_sq_distances(
    Xb: ArrayLike,
    Yb: ArrayLike | None = None,
    *,
    center: ArrayLike,
    precision: Precision = "mixed",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Exact squared Euclidean distances between two blocks of rows.

    The kernel behind :func:`pairwise_distances`, for callers that hold one block pair
    at a time (the out-of-core path: each Dask task reads two row blocks from a Zarr
    array and writes ``np.sqrt`` of the result into the distance matrix). All blocks of
    one matrix must be computed with the same `center`, usually the float64 mean of all
    rows; the method and its error bound are described in the module docstring.

    Parameters
    ----------
    Xb : (bx, d) ndarray
        A block of rows, float32 or float64 (other real dtypes are converted to float64).
    Yb : (by, d) ndarray, optional
        A second block. ``None`` computes `Xb` against itself and returns an exactly
        symmetric block with an exactly zero diagonal (the diagonal blocks of a matrix).
    center : (d,) array_like
        The common centre ``c``, converted to float64. Any vector shared by all blocks
        gives the same distances; the mean of all rows gives the smallest errors and the
        fewest float64 recomputations.
    precision : {'mixed', 'float64'}, optional
        ``'mixed'`` (default): float32 GEMM with a float64 safety net. ``'float64'``:
        float64 GEMM throughout, about half the speed on CPUs.
    device : str or torch.device, optional
        Where to compute: ``None`` picks ``'cuda'`` when available, else ``'cpu'``.

    Returns
    -------
    (bx, by) ndarray of float64
        Squared distances, each within a relative error of 1e-6 (of the distance), never
        negative.

    Notes
    -----
    Peak memory, besides the result: the two blocks as given, a centred copy of each in
    float32 (``(bx + by) * d * 4`` bytes; float64 with ``precision='float64'``), and two
    ``bx * by`` buffers. For ``bx = by = 512`` and ``d = 305,888`` the copies take 1.25 GB.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((5, 1000)).astype(np.float32)
    >>> d2 = block_sq_distances(X[:3], X[3:], center=X.mean(axis=0, dtype=np.float64))
    >>> d2.shape, d2.dtype
    ((3, 2), dtype('float64'))
    """
    _check_precision(precision)
    xb = _as_rows(Xb, "Xb")
    yb = None if Yb is None else _as_rows(Yb, "Yb")
    d = xb.shape[1]
    if yb is not None and yb.shape[1] != d:
        raise ValueError(f"Xb and Yb must have rows of the same length. Got {d} and {yb.shape[1]}.")
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (d,):
        raise ValueError(
            f"center must be a vector of length d = {d} (the rows' length). "
            f"Got shape {c.shape} instead."
        )
    if not np.isfinite(c).all():
        raise ValueError("center contains NaN or inf; pass the finite mean of the rows.")
    dev = _resolve_device(device)
    dtype = _working_dtype(d, precision)
    centre = _Centre(c, torch.from_numpy(c).to(dev))
    xr = _prepare(xb, centre, dtype, dev, name="Xb")
    yr = None if yb is None else _prepare(yb, centre, dtype, dev, name="Yb")
    return _block(xr, yr, centre).cpu().numpy()


# --- the driver ------------------------------------------------------------------------


def pairwise_distances(
    X: ArrayLike,
    Y: ArrayLike | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    precision: Precision = "mixed",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Exact Euclidean distances between the rows of `X` (and `Y`).

    The distance of the paper (Eq. 4): ``d_ij = ||x_i - y_j||``, so that ``d_ij^2`` is the
    texture loss ``L(x_i, x_j)`` when the rows are texture vectors. The rows are split
    into blocks of `block_size`; every block pair goes through :func:`block_sq_distances`
    with the common centre ``c`` = float64 mean of all rows (of `X` and `Y`). When `Y`
    is ``None`` only the block pairs ``i <= j`` are computed and mirrored.

    Parameters
    ----------
    X : (n, d) ndarray
        Vectors in rows, float32 or float64 (other real dtypes are converted to float64).
    Y : (m, d) ndarray, optional
        Second set of vectors; ``None`` (or `X` itself) means `X` against itself.
    block_size : int, optional
        Rows per block (default 512, measured: large enough for the GEMM to reach its
        peak, small enough that the wasted half of the diagonal blocks stays small).
    precision : {'mixed', 'float64'}, optional
        ``'mixed'`` (default): float32 GEMM with a float64 safety net. ``'float64'``:
        float64 GEMM throughout, about half the speed on CPUs.
    device : str or torch.device, optional
        Where to compute: ``None`` picks ``'cuda'`` when available, else ``'cpu'``.
        Float32 matmuls run with TF32 off; the previous setting is restored.

    Returns
    -------
    (n, m) ndarray of float64
        Distances, each within a relative error of 1e-6 of the exact one (the bound and
        its derivation are in the module docstring). With `Y` ``None`` the matrix is
        exactly symmetric with an exactly zero diagonal; exact duplicates give exactly 0;
        no entry is negative or NaN.

    Notes
    -----
    Memory: besides `X`, `Y` and the result, one centred copy of all rows (``n * d * 4``
    bytes in float32, 8 with ``precision='float64'``) and per block pair two
    ``block_size**2`` buffers. For ``n = 2000``, ``d = 305,888``: 2.4 GB.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((4, 1000)).astype(np.float32)
    >>> D = pairwise_distances(X, block_size=3)
    >>> D.shape, bool(np.array_equal(D, D.T)), float(D[0, 0])
    ((4, 4), True, 0.0)
    """
    _check_precision(precision)
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise ValueError(f"The 'block_size' parameter must be an int. Got {block_size!r}.")
    if block_size < 1:
        raise ValueError(
            f"The 'block_size' parameter must be a positive int. Got {block_size} instead."
        )
    x = _as_rows(X, "X")
    same = Y is None or Y is X
    y = x if same else _as_rows(Y, "Y")
    d = x.shape[1]
    if y.shape[1] != d:
        raise ValueError(f"X and Y must have rows of the same length. Got {d} and {y.shape[1]}.")
    dev = _resolve_device(device)
    dtype = _working_dtype(d, precision)

    # The mean doubles as the finiteness check: a NaN or inf anywhere makes it non-finite.
    total = x.sum(axis=0, dtype=np.float64)
    if not np.isfinite(total).all():
        _raise_nonfinite(x, "X", 0)
    if not same:
        total_y = y.sum(axis=0, dtype=np.float64)
        if not np.isfinite(total_y).all():
            _raise_nonfinite(y, "Y", 0)
        total += total_y
    mean = total / (x.shape[0] + (0 if same else y.shape[0]))
    centre = _Centre(mean, torch.from_numpy(mean).to(dev))

    def blocks(a: np.ndarray, name: str) -> list[tuple[slice, _Rows]]:
        out = []
        for s in range(0, a.shape[0], block_size):
            sl = slice(s, min(s + block_size, a.shape[0]))
            out.append((sl, _prepare(a[sl], centre, dtype, dev, name=name, offset=s)))
        return out

    xblocks = blocks(x, "X")
    yblocks = xblocks if same else blocks(y, "Y")
    result = np.empty((x.shape[0], y.shape[0]), dtype=np.float64)
    for bi, (si, xr) in enumerate(xblocks):
        for bj, (sj, yr) in enumerate(yblocks):
            if same and bj < bi:
                continue
            if same and bi == bj:
                block = _block(xr, None, centre)
            else:
                block = _block(xr, yr, centre)
            dist = torch.sqrt(block).cpu().numpy()
            result[si, sj] = dist
            if same and bj > bi:
                result[sj, si] = dist.T
    return result
