"""Exact pairwise Euclidean distances between texture vectors.

Texture vectors (Sec. III A of the paper) are long, ``d = 305,888``, and all of the same
sign: every entry is a Gram-matrix entry of ReLU features. Two vectors are therefore
strongly correlated, and near-duplicates (tiles of one micrograph, images that differ by a
seed) are common. The textbook expansion ``|x|^2 + |y|^2 - 2 x.y`` in float32, which is
what a GEMM-based ``cdist`` computes, then subtracts two nearly equal numbers of size
``|x|^2`` and loses every digit: relative errors of order 1 at a relative separation of
1e-4. This module computes the same product at float32 GEMM speed while keeping every
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

1. **Float32 cross term.** The rows are centred and rounded to float32
   (``fl32(x - c)``, one correctly rounded subtraction), 16,384 columns at a time into
   scratch buffers; their squared norms are summed in float64; the cross term
   ``xc . yc`` is a float32 GEMM (MKL or cuBLAS, TF32 off) over panels of 1024 columns
   whose results are summed in float64. Panelling matters: over all 305,888 columns the
   float32 accumulation has a relative error of about 2e-6 (measured with MKL), so even
   ``F = 4`` would break the requirement; over 1024-column panels it is about 100 times
   smaller.
2. **Float64 safety net.** A pair is accepted from step 1 only if its estimated ``F`` is at
   most ``F1(d)`` (see the error bound below; ``F1 = 9.1`` at ``d = 305,888``). The
   other pairs of the block are recomputed from the raw rows, centred in float64, by a
   float64 GEMM on just the rows and columns that hold them (or by step 3 directly when
   they are fewer than those rows and columns). This catches near-duplicates inside a
   widely spread set, where a global mean does not help.
3. **Direct differences.** Pairs whose float64 estimate still has ``F > F2(d)``
   (``F2 = 1.6e7`` at ``d = 305,888``: pairs closer than about 3.5e-4 times their
   distance to the centre, and exact duplicates) are computed as ``sum((x - y)**2)``
   from the raw rows in float64. Exact duplicates therefore give exactly 0.

With ``precision="float64"`` step 1 is a float64 GEMM of the rows centred in float64 (no
float32 at all), followed by step 3. For ``d`` between about 70 and 15,000 ``F1(d)`` is
below 2, so ``"mixed"`` would send most pairs to step 2 anyway: it computes in float64
from the start.

Error bound
-----------
For a pair accepted at step 1 the relative error of the distance is at most

    ``2**-24 * sqrt(2 F)  +  gamma32(d) * F / 2``

The first term is the float32 rounding of the centred rows (a deterministic bound: the
rounded difference is within ``2**-24 (|xc| + |yc|)`` of the exact one). The second is the
float32 GEMM, with the error model ``gamma32(d) = C * 2**-24 * min(1024, d) / sqrt(d)``:
rounding errors accumulate along each panel and average out across the float64 sum of
``d / 1024`` panels. ``C = 0.5`` is 1.5 times the largest constant measured (0.17
over about 3,000 pairs with ``F`` just below ``F1`` at d = 20,000 to 305,888, 0.13 for
single-panel sums at d = 1,000, and 0.33 on near-duplicates far from the centre, every
summand of one sign, the worst case: "Panel width" below). The
model is statistical, not a worst-case bound: that one, ``d * 2**-24 = 0.02`` for a
length-``d`` float32 sum, would be useless. ``F1(d) = 5e-7 / gamma32(d)``, capped at 32,
keeps the sum of both terms at most 7.3e-7 (at ``d = 305,888``: ``F1 = 9.1``, at most
5e-7). Step 2 has the same form with ``gamma64(d) = C * 2**-53 * sqrt(d)`` (one float64
accumulation over ``d``) and ``F2(d) = 5e-7 / gamma64(d)``: at most 2.5e-7. Step 3 is
accurate to float64 rounding. Squared distances are clipped at 0 (step 3 leaves nothing
to clip in practice), so no distance is negative or NaN.

Panel width
-----------
Why 1024 columns and not wider: a wider panel does not make the GEMM faster (on one
core, ``torch.bmm`` of 1024 x 1024 products ran at 95 GFLOP/s for panels of 1024, 2048,
8192 and 16384 columns alike, within 5 %, as fast as one ``torch.mm`` over 16,384
columns), it only saves float64 panel sums, which cost 3 % of the kernel's CPU time at
1024 columns once done in numpy; and it lowers ``F1``, sending more pairs to step 2.
The error model with its linear factor ``min(P, d)`` is pessimistic for wide panels:
remeasured on near-duplicates far from the centre (every summand of one sign; 256 x 256
pairs at d = 20,000, 100,000 and 305,888), ``gamma * sqrt(d) / u`` grows from 240-340
at ``P = 1024`` to 380-520 at 4096 and 1040-1330 at 16,384, close to ``sqrt(1024 P)``
(constants 0.18-0.33), not to ``P``. The largest constant for ``P = 1024`` is 0.33,
not the 0.17 measured on milder data: ``C = 0.5`` keeps a margin of 1.5 on it, and the
bound as a whole (at most 7.3e-7 against 1e-6) one of 2.2. With the linear model kept,
``P = 2048`` gives ``F1 = 4.6`` and ``P = 4096`` gives 2.3 at ``d = 305,888``: on
texture-like data the pairs then recomputed in float64 made the kernel 1.0x and 0.38x
as fast as with 1024 columns. The widest panel that keeps the bound without costing
fallbacks is therefore 1024.

Speed
-----
Measured on a 2-core AVX-512 CPU (float32 GEMM 185-201 GFLOP/s, float64 92-95), n = 2000
texture-like vectors of d = 305,888: 200,000 pairs/s, 67 % of the float32 GEMM peak
(scipy's ``cdist``: 4,000 pairs/s; ``precision="float64"``: 106,000 pairs/s). The cost is
the float32 GEMM, a diagonal block at 0.56-0.62 of a full one, plus centring each row
once per block pair, the panel sums and the row norms. Where the CPU time went outside
the GEMM on one thread (n = 2048, ``benchmarks/profile_distances.py``), before and after
the panel sums moved from torch to numpy: panel sums 29 % -> 3 %, centring 4 %, row norms
3 %, the driver (mean, square roots, copies) 3 %; the GEMM itself 87 % after. Pairs that
need step 2 add a float64 GEMM on their rows and columns (half the float32 speed); pairs
in step 3 cost ``d`` memory-bound operations each (about 3,000 pairs/s at
``d = 305,888``): throughput degrades gracefully when much of the data is made of tight
clusters far from the common mean. On the CPU the in-memory driver centres each group of
columns of all rows once, then runs every block pair's GEMM on it, rather than centring
both rows of every block pair: the same sums in the same order, so the same bits. On a
quiet 2-core AVX2 CPU (float32 GEMM 172-186 GFLOP/s), n = 4096: 84.7 % of that peak
against 80.2 % block pair by block pair (1.06x), n = 2048: 76.8 % against 74.4 % (1.03x).

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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from microscale import scratch
from microscale._validation import as_real_rows
from microscale.device import resolve_device

__all__ = [
    "block_sq_distances",
    "cancellation_limits",
    "ieee_fp32_matmul",
    "pairwise_distances",
    "row_sq_norms",
]

Precision = Literal["mixed", "float64"]

#: Default number of rows per block; chosen by ``benchmarks/bench_distances.py``.
DEFAULT_BLOCK_SIZE = 1024

_PANEL32 = 1024  # columns per float32 GEMM panel (accumulated in float64)
_PANEL64 = 8192  # columns per panel when re-centring rows in float64 (step 2)
_ERROR_MODEL_C = 0.5  # constant of the GEMM error model, 3x the measured maximum
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
    >>> round(f1, 1), f"{f2:.1e}"
    (9.1, '1.6e+07')
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
def ieee_fp32_matmul() -> Iterator[None]:
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
    """At least one row of at least one real entry; float32 stays, the rest become float64."""
    arr = as_real_rows(a, name)
    if arr.shape[0] < 1:
        raise ValueError(f"{name} has no rows. Pass at least one vector.")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has rows of length 0. Pass vectors with at least one entry.")
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_precision(precision: str) -> None:
    if precision not in ("mixed", "float64"):
        raise ValueError(
            f"The 'precision' parameter must be 'mixed' or 'float64'. Got {precision!r} instead."
        )


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
# Nothing of size n x d is allocated: the rows are centred on the fly, one group of
# _GROUP columns at a time, into scratch buffers that are reused for every block pair
# (fresh multi-GB buffers cost more in page faults than the centring itself). On the CPU
# the element-wise work (centring, norms, differences) is numpy, which runs on one
# thread, and only the GEMMs go through torch (MKL): torch's parallel element-wise kernels
# synchronise all threads at every call, and when cores are shared (several Dask tasks,
# other processes) each call can stall for a scheduler time slice. On a GPU all is torch.

_GROUP = 16 * _PANEL32  # columns centred at once into the scratch buffers
_GPU_ROWS = 64  # rows per step when computing norms on a GPU
_MIN_SPLIT = 16  # fewest rows (or columns) per thread worth a hand-off to the pool
#: Most bytes of centred rows (one group of columns of all rows) that the in-memory driver
#: keeps, to centre each row once per group instead of once per block pair: 268 MB for
#: n = 4096 float32 rows, so up to n = 16,384 (beyond, block pair by block pair).
_ALL_ROWS_BYTES = 1 << 30

# numpy runs its element-wise loops on one thread; with the GEMM on all of torch's
# threads, the centring, panel sums, norms and the mean would take a growing share of
# the kernel on more cores. They are split by rows over torch's thread count instead:
# numpy releases the GIL in those loops, and each element is computed exactly as on one
# thread (the splits never cut a sum), so the results are bit-identical.
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(thread_name_prefix="microscale-distance")
        return _POOL


def _split(n: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges that cover ``range(n)``, one per thread of torch's count."""
    k = max(1, min(torch.get_num_threads(), n // _MIN_SPLIT))
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _in_parallel(fn: Callable[[int, int], None], n: int) -> None:
    """Run ``fn(start, stop)`` over ``range(n)`` split by :func:`_split`.

    The calling thread runs the first range itself, so a caller never waits on a pool
    that its own work fills (pool threads never submit work).
    """
    (first, *rest) = _split(n)
    futures = [_pool().submit(fn, s, e) for s, e in rest]
    try:
        fn(*first)
    finally:
        for f in futures:
            f.result()


class _Centre:
    """The common centre ``c`` in float64 and rounded to float32, in numpy and on the device."""

    def __init__(self, center: np.ndarray, device: torch.device) -> None:
        self.np64 = center
        self.np32 = center.astype(np.float32)
        self.t64 = torch.from_numpy(center).to(device)
        self.t32 = torch.from_numpy(self.np32).to(device)

    def for_rows(self, raw_dtype: torch.dtype, work: torch.dtype) -> torch.Tensor:
        """The centre to subtract: float32 rows in a float32 product use the rounded centre,
        so that ``raw - c`` is one correctly rounded float32 subtraction (any common vector
        is a valid centre; rounding it changes no distance). Otherwise the subtraction is in
        float64, rounded once to the working type."""
        return self.t32 if raw_dtype == work == torch.float32 else self.t64


class _Workspace:
    """Scratch buffers, grown on demand and reused across block pairs.

    ``pooled=True`` (CPU only) borrows them from this thread's :mod:`microscale.scratch`
    pool, so that they outlive the call (on a GPU torch's caching allocator already
    reuses device memory).
    """

    def __init__(self, device: torch.device, *, pooled: bool = False) -> None:
        self.device = device
        self._flat: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._pooled = pooled and device.type == "cpu"

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if self._pooled:
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
            return torch.from_numpy(scratch.buffer(f"distance.{name}.{np_dtype}", shape, np_dtype))
        numel = math.prod(shape)
        buf = self._flat.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._flat[(name, dtype)] = buf
        return buf[:numel].view(shape)


@dataclass
class _Rows:
    """One block of rows and the squared norms of its centred rows (float64)."""

    raw: torch.Tensor  # (b, d) as given, float32 or float64; on the CPU it shares numpy memory
    sq_norms: torch.Tensor  # (b,) float64: sum of fl(raw - c)**2 in the working dtype
    name: str  # for error messages: "X", "Y", "Xb", "Yb"
    offset: int  # index of the first row in the caller's array


def _numpy_path(device: torch.device) -> bool:
    """Element-wise work in numpy (CPU) or in torch (GPU; tests also run it on the CPU)."""
    return device.type == "cpu"


def _working_dtype(d: int, precision: Precision) -> torch.dtype:
    if precision == "float64" or cancellation_limits(d)[0] < _MIN_F1:
        return torch.float64
    return torch.float32


def _centre_into(dst: torch.Tensor, raw: torch.Tensor, c: torch.Tensor) -> None:
    """``dst = fl(raw - c)``, rounded once to ``dst``'s dtype."""
    if _numpy_path(dst.device):
        raw_np, c_np, dst_np = raw.numpy(), c.numpy(), dst.numpy()

        def rows(s: int, e: int) -> None:
            with np.errstate(over="ignore"):  # overflow to inf is reported by the caller
                np.subtract(raw_np[s:e], c_np, out=dst_np[s:e], casting="same_kind")

        _in_parallel(rows, raw_np.shape[0])
    elif raw.dtype == c.dtype == dst.dtype:
        torch.sub(raw, c, out=dst)
    else:
        dst.copy_(raw.to(c.dtype) - c)


def _sq_norms(raw: torch.Tensor, centre: _Centre, work: torch.dtype) -> torch.Tensor:
    """Float64 squared norms of the centred rows exactly as the GEMM sees them."""
    n, d = raw.shape
    c = centre.for_rows(raw.dtype, work)
    if _numpy_path(raw.device):
        out = np.empty(n, dtype=np.float64)
        raw_np, c_np = raw.numpy(), c.numpy()
        np_work = np.float32 if work == torch.float32 else np.float64

        def rows(s: int, e: int) -> None:
            row = np.empty(d, dtype=np_work)
            r64 = np.empty(d, dtype=np.float64)
            for i in range(s, e):  # one row at a time: no (n, d) float64 copy
                with np.errstate(over="ignore"):  # overflow to inf is reported by the caller
                    np.subtract(raw_np[i], c_np, out=row, casting="same_kind")
                r64[:] = row
                out[i] = np.einsum("i,i->", r64, r64)  # (np.dot: OpenBLAS, 5x slower here)

        _in_parallel(rows, n)
        return torch.from_numpy(out)
    out_t = torch.empty(n, dtype=torch.float64, device=raw.device)
    for s in range(0, n, _GPU_ROWS):
        part = (raw[s : s + _GPU_ROWS].to(c.dtype) - c).to(work).double()
        out_t[s : s + _GPU_ROWS] = torch.einsum("ij,ij->i", part, part)
    return out_t


def _prepare(
    raw: np.ndarray,
    centre: _Centre,
    work: torch.dtype,
    device: torch.device,
    *,
    name: str,
    offset: int = 0,
    sq_norms: np.ndarray | None = None,
) -> _Rows:
    """Wrap one block of rows and compute (or take) the squared norms of its centred rows."""
    if not raw.flags.writeable:  # torch.from_numpy warns on read-only memory; never written
        raw = raw.copy()
    raw_t = torch.from_numpy(raw).to(device)
    if sq_norms is None:
        norms = _sq_norms(raw_t, centre, work)
    else:
        norms = torch.from_numpy(np.array(sq_norms, dtype=np.float64)).to(device)
    rows = _Rows(raw=raw_t, sq_norms=norms, name=name, offset=offset)
    if not bool(torch.isfinite(norms).all()):
        _raise_nonfinite(raw, name, offset)
    return rows


def _accumulate(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, ws: _Workspace) -> None:
    """``out += a @ b.T`` in float64; float32 operands in panels of _PANEL32 columns.

    The panels go through one batched GEMM (``torch.bmm``) into float32 partial products,
    which are then added to `out` in float64. On the CPU that sum is numpy's: torch's
    ``sum(dim=0, dtype=float64)`` over the panels ran 10 times slower (263 ms against
    27 ms for 16 panels of 1024 x 1024) and took 29 % of the kernel's time.
    """
    if a.dtype == torch.float64:
        out.addmm_(a, b.T)
        return
    (ra, w), rb = a.shape, b.shape[0]
    n_panels = w // _PANEL32
    full = n_panels * _PANEL32
    if n_panels:
        a_p = a[:, :full].view(ra, n_panels, _PANEL32).transpose(0, 1)
        b_p = b[:, :full].view(rb, n_panels, _PANEL32).transpose(0, 1)
        partial = ws.get("partial", (n_panels, ra, rb), torch.float32)
        torch.bmm(a_p, b_p.transpose(1, 2), out=partial)
        if _numpy_path(out.device):
            total = ws.get("panel_sum", (ra, rb), torch.float64).numpy()
            partial_np, out_np = partial.numpy(), out.numpy()

            def rows(s: int, e: int) -> None:
                np.sum(partial_np[:, s:e], axis=0, dtype=np.float64, out=total[s:e])
                np.add(out_np[s:e], total[s:e], out=out_np[s:e])

            _in_parallel(rows, ra)
        else:
            out += partial.sum(dim=0, dtype=torch.float64)
    if full < w:
        out += a[:, full:] @ b[:, full:].T


def _accumulate_symmetric(out: torch.Tensor, a: torch.Tensor, ws: _Workspace) -> None:
    """``out += a @ a.T`` on and above the diagonal blocks (the rest is mirrored later).

    The rows are halved recursively down to _SPLIT_ROWS: two diagonal halves and one
    off-diagonal quarter, so a 512-row block costs 0.62 of the full product instead of 1.
    """
    b = a.shape[0]
    if b <= _SPLIT_ROWS:
        _accumulate(out, a, a, ws)
        return
    h = b // 2
    _accumulate_symmetric(out[:h, :h], a[:h], ws)
    _accumulate_symmetric(out[h:, h:], a[h:], ws)
    _accumulate(out[:h, h:], a[:h], a[h:], ws)


def _cross(
    xr: _Rows, yr: _Rows | None, centre: _Centre, work: torch.dtype, ws: _Workspace
) -> torch.Tensor:
    """Step 1: ``xc @ yc.T`` in float64, centring one group of columns at a time.

    With ``yr=None`` only the upper triangle (with the diagonal) is filled.
    """
    bx, d = xr.raw.shape
    by = bx if yr is None else yr.raw.shape[0]
    out = torch.zeros(bx, by, dtype=torch.float64, device=xr.raw.device)
    cx = centre.for_rows(xr.raw.dtype, work)
    cy = None if yr is None else centre.for_rows(yr.raw.dtype, work)
    for s in range(0, d, _GROUP):
        e = min(d, s + _GROUP)
        xa = ws.get("x", (bx, e - s), work)
        _centre_into(xa, xr.raw[:, s:e], cx[s:e])
        if yr is None:
            _accumulate_symmetric(out, xa, ws)
        else:
            ya = ws.get("y", (by, e - s), work)
            _centre_into(ya, yr.raw[:, s:e], cy[s:e])
            _accumulate(out, xa, ya, ws)
    return out


def _all_crosses(
    xblocks: list[tuple[slice, _Rows]],
    yblocks: list[tuple[slice, _Rows]] | None,
    centre: _Centre,
    work: torch.dtype,
    ws: _Workspace,
    out: np.ndarray,
) -> None:
    """Step 1 for every block pair of the driver at once, into ``out``'s blocks (CPU).

    The same sums as :func:`_cross` block pair by block pair, in the same order, so the
    same bits; but the loops are swapped: each group of _GROUP columns of *all* rows is
    centred once, and every block pair's GEMM then reads it. Block pair by block pair,
    each row is centred once per pair it is in (``n / block_size`` times, about).

    ``yblocks=None``: `X` against itself, the pairs ``i <= j`` only, and only the upper
    triangle of the diagonal blocks. ``out`` (n, m) float64 must hold zeros.
    """
    d = xblocks[0][1].raw.shape[1]
    sets = [(xblocks, "all_x")] + ([] if yblocks is None else [(yblocks, "all_y")])
    pairs = [
        (si, sj, (None if yblocks is None and bi == bj else yr))
        for bi, (si, xr) in enumerate(xblocks)
        for bj, (sj, yr) in enumerate(xblocks if yblocks is None else yblocks)
        if yblocks is not None or bj >= bi
    ]
    for s in range(0, d, _GROUP):
        e = min(d, s + _GROUP)
        centred = []
        for blocks, name in sets:
            buf = ws.get(name, (blocks[-1][0].stop, e - s), work)
            for sl, rows in blocks:
                c = centre.for_rows(rows.raw.dtype, work)
                _centre_into(buf[sl], rows.raw[:, s:e], c[s:e])
            centred.append(buf)
        xa, ya = centred[0], centred[-1]
        for si, sj, yr in pairs:
            target = torch.from_numpy(out[si, sj])
            if yr is None:
                _accumulate_symmetric(target, xa[si], ws)
            else:
                _accumulate(target, xa[si], ya[sj], ws)


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
    on_cpu = _numpy_path(dev)
    if on_cpu:
        x_np, y_np, r_np, c_np = x_raw.numpy(), y_raw.numpy(), rows.numpy(), cols.numpy()
    for s in range(0, x_raw.shape[1], _PANEL64):
        e = s + _PANEL64
        if on_cpu:
            xp_np = np.subtract(x_np[r_np, s:e], centre.np64[s:e], dtype=np.float64)
            yp_np = np.subtract(y_np[c_np, s:e], centre.np64[s:e], dtype=np.float64)
            nx += torch.from_numpy(np.einsum("ij,ij->i", xp_np, xp_np))
            ny += torch.from_numpy(np.einsum("ij,ij->i", yp_np, yp_np))
            xp, yp = torch.from_numpy(xp_np), torch.from_numpy(yp_np)
        else:
            xp = x_raw[:, s:e].index_select(0, rows).double() - centre.t64[s:e]
            yp = y_raw[:, s:e].index_select(0, cols).double() - centre.t64[s:e]
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
    if _numpy_path(x_raw.device):
        out = np.empty(ii.numel(), dtype=np.float64)
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


def _block(
    xr: _Rows, yr: _Rows | None, centre: _Centre, work: torch.dtype, ws: _Workspace
) -> torch.Tensor:
    """Squared distances of one block pair (steps 1 to 3), float64 on the device.

    ``yr=None``: `xr` against itself, exactly symmetric with an exactly zero diagonal.
    """
    with ieee_fp32_matmul():
        cross = _cross(xr, yr, centre, work, ws)
    return _finish(xr, yr, cross, centre, work)


def _finish(
    xr: _Rows, yr: _Rows | None, cross: torch.Tensor, centre: _Centre, work: torch.dtype
) -> torch.Tensor:
    """Steps 1 to 3 from the float64 cross term of step 1 (:func:`_cross`, or the same
    sums accumulated by :func:`_all_crosses`): squared distances, float64 on the device."""
    same = yr is None
    y = xr if yr is None else yr
    f1, f2 = cancellation_limits(xr.raw.shape[1])
    first_limit = f1 if work == torch.float32 else f2
    with ieee_fp32_matmul():
        scale = xr.sq_norms[:, None] + y.sq_norms[None, :]
        d2 = scale - 2.0 * cross
        if same:
            d2 = torch.triu(d2, diagonal=1)  # the lower triangle is not computed
        if not bool(torch.isfinite(d2).all()):  # only with caller-supplied norms
            raws = [(r.raw.cpu().numpy(), r) for r in (xr, y)]
            for raw, r in raws:
                if not np.isfinite(raw).all():
                    _raise_nonfinite(raw, r.name, r.offset)
            _raise_nonfinite(raws[0][0], f"{xr.name} or {y.name}", 0)
        suspect = d2 * first_limit <= scale  # F > first_limit (and every d2 <= 0)
        if same:
            suspect = torch.triu(suspect, diagonal=1)
        ii, jj = torch.nonzero(suspect, as_tuple=True)
        if ii.numel() and work == torch.float32:
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
        d2 = d2 + d2.T
    return d2


def _check_center(center: ArrayLike, d: int) -> np.ndarray:
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (d,):
        raise ValueError(
            f"center must be a vector of length d = {d} (the rows' length). "
            f"Got shape {c.shape} instead."
        )
    if not np.isfinite(c).all():
        raise ValueError("center contains NaN or inf; pass the finite mean of the rows.")
    return np.ascontiguousarray(c)


def _check_norms(norms: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    if norms is None:
        return None
    arr = np.asarray(norms, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(
            f"{name} must have one entry per row, shape ({n},). Got shape {arr.shape} instead. "
            "Compute it with row_sq_norms on the same rows."
        )
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError(f"{name} must be finite and non-negative. Compute it with row_sq_norms.")
    return arr


def row_sq_norms(
    X: ArrayLike,
    *,
    center: ArrayLike,
    precision: Precision = "mixed",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Squared norms of the centred rows, exactly as :func:`block_sq_distances` uses them.

    The kernel needs ``|fl(x - c)|^2`` for every row of both blocks. A caller that
    meets each row block in many block pairs (the out-of-core path) can compute them
    once, with this function, and pass them as `x_sq_norms` / `y_sq_norms`: that saves
    about a quarter of the kernel's time for 512-row blocks at ``d = 305,888``.

    Parameters
    ----------
    X : (n, d) ndarray
        Rows, float32 or float64.
    center : (d,) array_like
        The common centre, the same that is passed to :func:`block_sq_distances`.
    precision : {'mixed', 'float64'}, optional
        The same as passed to :func:`block_sq_distances` (the norms depend on it).
    device : str or torch.device, optional
        Where to compute; ``None`` picks ``'cuda'`` when available.

    Returns
    -------
    (n,) ndarray of float64

    Examples
    --------
    >>> X = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> row_sq_norms(X, center=X.mean(axis=0, dtype=np.float64))
    array([6.75, 6.75])
    """
    _check_precision(precision)
    x = _as_rows(X, "X")
    c = _check_center(center, x.shape[1])
    dev = resolve_device(device)
    rows = _prepare(x, _Centre(c, dev), _working_dtype(x.shape[1], precision), dev, name="X")
    return rows.sq_norms.cpu().numpy()


def block_sq_distances(
    Xb: ArrayLike,
    Yb: ArrayLike | None = None,
    *,
    center: ArrayLike,
    x_sq_norms: ArrayLike | None = None,
    y_sq_norms: ArrayLike | None = None,
    precision: Precision = "mixed",
    device: str | torch.device | None = None,
    keep_scratch: bool = False,
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
        symmetric block with an exactly zero diagonal (the diagonal blocks of a matrix),
        at about 0.6 of the cost of a full block pair.
    center : (d,) array_like
        The common centre ``c``, converted to float64. Any vector shared by all blocks
        gives the same distances; the mean of all rows gives the smallest errors and the
        fewest float64 recomputations.
    x_sq_norms, y_sq_norms : (bx,) and (by,) array_like, optional
        :func:`row_sq_norms` of `Xb` and `Yb` with the same `center` and `precision`;
        computed here when not given. Norms from anything else give wrong distances.
    precision : {'mixed', 'float64'}, optional
        ``'mixed'`` (default): float32 GEMM with a float64 safety net. ``'float64'``:
        float64 GEMM throughout, about half the speed on CPUs.
    device : str or torch.device, optional
        Where to compute: ``None`` picks ``'cuda'`` when available, else ``'cpu'``.
    keep_scratch : bool, optional
        Keep the kernel's scratch (below) in this thread's :mod:`microscale.scratch` pool
        for the next call instead of freeing it, until ``microscale.scratch.release()``.
        For callers that run many blocks in a row: fresh memory costs page faults.

    Returns
    -------
    (bx, by) ndarray of float64
        Squared distances; their square roots are within a relative error of 1e-6 of
        the exact distances. Never negative.

    Notes
    -----
    Peak memory, besides the blocks and the result: scratch for one group of 16,384
    centred columns of both blocks, ``(bx + by) * 16384 * 4`` bytes (8 with float64), and
    16 float32 partial products, ``16 * bx * by * 4`` bytes: 84 MB for 512-row blocks,
    200 MB for 1024-row blocks, whatever ``d``. Nothing of size ``bx * d`` is allocated
    (on a GPU the blocks are copied to the device).

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
    c = _check_center(center, d)
    xn = _check_norms(x_sq_norms, xb.shape[0], "x_sq_norms")
    yn = None if yb is None else _check_norms(y_sq_norms, yb.shape[0], "y_sq_norms")
    dev = resolve_device(device)
    work = _working_dtype(d, precision)
    centre = _Centre(c, dev)
    xr = _prepare(xb, centre, work, dev, name="Xb", sq_norms=xn)
    yr = None if yb is None else _prepare(yb, centre, work, dev, name="Yb", sq_norms=yn)
    return _block(xr, yr, centre, work, _Workspace(dev, pooled=keep_scratch)).cpu().numpy()


# --- the driver ------------------------------------------------------------------------


def _column_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0, dtype=float64)``, split by columns over torch's threads."""
    out = np.empty(a.shape[1], dtype=np.float64)

    def columns(s: int, e: int) -> None:
        np.sum(a[:, s:e], axis=0, dtype=np.float64, out=out[s:e])

    _in_parallel(columns, a.shape[1])
    return out


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
        Rows per block. The default, 1024, was measured (n = 2000, d = 305,888, 2-core
        CPU; percent of the float32 GEMM peak): 256: 53 %, 512: 63 %, 768: 65 %, 1024:
        67 %, one 2000-row block: 68 %. Larger blocks centre each row fewer times; 1024
        keeps the scratch memory at about 200 MB.
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
    Memory: besides `X`, `Y` and the result, the kernel's scratch (200 MB for 1024-row
    blocks, whatever ``d``; see :func:`block_sq_distances`) and, on the CPU, one group of
    16,384 centred columns of all rows, ``(n + m) * 16384 * 4`` bytes (8 with float64
    products; 268 MB for ``n = 4096``): each row is then centred once per group of
    columns rather than once per block pair it is in, with the same result bit for bit.
    Where that would exceed 1 GiB (float32: ``n + m > 16,384``) the driver goes block
    pair by block pair instead. No centred copy of whole rows is made. On a GPU, `X` and
    `Y` are copied to the device.

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
    dev = resolve_device(device)
    work = _working_dtype(d, precision)

    # The mean doubles as the finiteness check: a NaN or inf anywhere makes it non-finite.
    total = _column_sums(x)
    if not np.isfinite(total).all():
        _raise_nonfinite(x, "X", 0)
    if not same:
        total_y = _column_sums(y)
        if not np.isfinite(total_y).all():
            _raise_nonfinite(y, "Y", 0)
        total += total_y
    mean = total / (x.shape[0] + (0 if same else y.shape[0]))
    centre = _Centre(mean, dev)
    ws = _Workspace(dev)

    def blocks(a: np.ndarray, name: str) -> list[tuple[slice, _Rows]]:
        out = []
        for s in range(0, a.shape[0], block_size):
            sl = slice(s, min(s + block_size, a.shape[0]))
            out.append((sl, _prepare(a[sl], centre, work, dev, name=name, offset=s)))
        return out

    xblocks = blocks(x, "X")
    yblocks = xblocks if same else blocks(y, "Y")
    # Centre each group of columns of all rows once rather than once per block pair,
    # where the centred rows of one group fit _ALL_ROWS_BYTES (same bits either way).
    rows_bytes = (x.shape[0] + (0 if same else y.shape[0])) * min(d, _GROUP) * work.itemsize
    at_once = _numpy_path(dev) and len(xblocks) * len(yblocks) > 1 and rows_bytes <= _ALL_ROWS_BYTES
    if at_once:
        result = np.zeros((x.shape[0], y.shape[0]), dtype=np.float64)  # the sums, at first
        with ieee_fp32_matmul():
            _all_crosses(xblocks, None if same else yblocks, centre, work, ws, result)
    else:
        result = np.empty((x.shape[0], y.shape[0]), dtype=np.float64)
    for bi, (si, xr) in enumerate(xblocks):
        for bj, (sj, yr) in enumerate(yblocks):
            if same and bj < bi:
                continue
            other = None if same and bi == bj else yr
            if at_once:
                block = _finish(xr, other, torch.from_numpy(result[si, sj]), centre, work)
            else:
                block = _block(xr, other, centre, work, ws)
            # numpy's square root, correctly rounded (torch's vectorised CPU one is 1 ulp
            # off for about 1 % of values): the out-of-core stage's, so both agree exactly
            dist = np.sqrt(block.cpu().numpy())
            result[si, sj] = dist
            if same and bj > bi:
                result[sj, si] = dist.T
    return result
