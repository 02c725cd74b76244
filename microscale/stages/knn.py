"""Stage 3, ``"landmarks"`` mode: every row's exact k nearest neighbours, streamed.

Outlier scores and the map's click-to-neighbours need only each row's ``k`` nearest other
rows. :func:`run_neighbors` finds them exactly without the (n, n) matrix, on disk or in
memory: one task per block of ``b`` rows (:func:`compute_neighbor_block`) reads its rows,
then streams every block of rows of the store past them through the same exact distance
kernel as the full matrix (:func:`microscale.distance.block_sq_distances`, called on each
block pair exactly as the full matrix calls it: the block against itself as a diagonal
block, a block ``j < i`` as pair ``(j, i)`` transposed; so with the same block size and
centre every distance is bitwise the full matrix's), keeping a running top-k per row (:func:`microscale.neighbors.merge_nearest`: ties go to the lower index,
as on the full path). It writes ``neighbors/<d>/index`` (n, k) int64 and
``neighbors/<d>/distance`` (n, k) float64 in ``(b, k)`` chunks, then its record.

Cost: ``n^2`` pairs (each pair is met from both of its rows; the full matrix computes
``n^2 / 2`` and writes them), ``n^2 d / b`` bytes of row reads, ``8 b (b + k)`` bytes of
candidates per task; disk ``16 n k``.

Growth: a record says which rows of the block it covers and against how many columns.
When the archive has grown from ``n0`` to ``n`` rows, a block of old rows reads only
the new rows ``n0:n`` and merges them into its stored lists (an old row is updated where
a new image enters its top k), and new rows are computed against all ``n``. A stored
chunk that a killed task wrote after its record (neighbours past the recorded columns)
is recomputed whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from microscale import scratch
from microscale.neighbors import DEFAULT_K, merge_nearest
from microscale.stages._runner import (
    Progress,
    Root,
    StageCounts,
    as_store,
    locked,
    root_path,
    row_ranges,
    run_units,
)
from microscale.stages.distances import (
    distance_level,
    ensure_center,
    release_scratch,
    require_rows,
    rows_per_block,
)
from microscale.stages.features import feature_dtype
from microscale.store import (
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    delete_array,
    ensure_array,
    has_array,
    read_array,
    read_rows,
    write_block,
)

__all__ = ["NeighborBlock", "compute_neighbor_block", "plan_neighbor_blocks", "run_neighbors"]


@dataclass(frozen=True)
class NeighborBlock:
    """One task of the neighbour stage: the rows ``start:stop`` against ``n`` columns.

    Attributes
    ----------
    index : int
        Row block index.
    start, stop : int
        The block's rows.
    n : int
        Rows of the store (the columns every row is compared with).
    k : int
        Neighbours per row.
    known_stop, known_cols : int
        Rows ``start:known_stop`` already hold their neighbours among columns
        ``0:known_cols`` (an archive that grew); ``known_stop = start`` when none do.
    """

    index: int
    start: int
    stop: int
    n: int
    k: int
    known_stop: int
    known_cols: int

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return f"{self.index:09d}"

    @property
    def extent(self) -> dict[str, Any]:
        """What the record says was covered once the task is done."""
        return {"rows": [self.start, self.stop], "cols": [0, self.n], "k": self.k}


def _k_for(n: int, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"The 'k' parameter must be a positive int. Got {k!r} instead.")
    if n < 2:
        raise ValueError(f"Nearest neighbours need at least 2 rows; the store has {n}.")
    return min(int(k), n - 1)


def plan_neighbor_blocks(
    store: Root, *, descriptor: str = "cnn", k: int = DEFAULT_K, level: str = "image"
) -> list[NeighborBlock]:
    """Row blocks whose neighbours are missing or stale (the archive grew), in order.

    Needs ``neighbors/<d>/index`` to exist (its chunk is the block size).
    """
    store = as_store(store)
    lv = distance_level(descriptor, level)
    n = lv.n(store)
    k = _k_for(n, k)
    b = array_chunks(store, lv.neighbor_index)[0]
    records = store.done_keys(lv.neighbor_stage)
    out = []
    for i, (a, e) in enumerate(row_ranges(n, b)):
        unit = NeighborBlock(i, a, e, n, k, a, 0)
        rec = records.get(unit.key)
        if rec == unit.extent:
            continue
        try:
            (r0, r1), (c0, c1), rk = rec["rows"], rec["cols"], rec["k"]
        except (TypeError, KeyError, ValueError):
            r0 = None
        if r0 == a and rk == k and c0 == 0 and a < r1 <= e and r1 <= c1 <= n:
            unit = NeighborBlock(i, a, e, n, k, int(r1), int(c1))
        out.append(unit)
    return out


def compute_neighbor_block(
    root: Root,
    unit: NeighborBlock,
    *,
    descriptor: str = "cnn",
    precision: str = "mixed",
    device: str | None = None,
    level: str = "image",
) -> NeighborBlock:
    """The k nearest neighbours of one block of rows, streamed; written, then recorded.

    See the module docstring. Peak memory, for ``b``-row blocks of ``d`` features of
    ``s`` bytes: ``2 b d s`` (the block and one streamed block, reused buffers),
    ``8 b^2`` (a distance block), ``16 b (b + k)`` (the candidates) and the kernel's
    scratch: as a task of the full matrix, without its transposed copy.
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    lv = distance_level(descriptor, level)
    store = as_store(root)
    center = read_array(store, lv.center)
    b = array_chunks(store, lv.neighbor_index)[0]
    width = array_shape(store, lv.rows)[1]
    dtype = feature_dtype(descriptor)
    a, e, k = unit.start, unit.stop, unit.k
    xi = read_rows(store, lv.rows, a, e, out=scratch.buffer("knn.rows", (b, width), dtype)[: e - a])
    ni = row_sq_norms(xi, center=center, precision=precision, device=device)
    best_d = np.full((e - a, k), np.inf)
    best_i = np.full((e - a, k), -1, dtype=np.int64)
    known, cols0 = unit.known_stop - a, unit.known_cols
    if known > 0:
        old_i = read_rows(store, lv.neighbor_index, a, unit.known_stop)
        old_d = read_rows(store, lv.neighbor_distance, a, unit.known_stop)
        if (old_i < 0).any() or (old_i >= cols0).any() or not np.isfinite(old_d).all():
            known, cols0 = 0, 0  # written past its record by a killed task: redo the block
        else:
            best_d[:known], best_i[:known] = old_d, old_i
    cols = scratch.buffer("knn.cols", (b, width), dtype)
    for c0, c1 in row_ranges(unit.n, b):
        if known == e - a and c1 <= cols0:
            continue  # every row already knows these columns
        if c0 == a:  # the block against itself: exactly symmetric, zero diagonal
            d2 = block_sq_distances(
                xi, None, center=center, x_sq_norms=ni, precision=precision, device=device,
                keep_scratch=True,
            )  # fmt: skip
        elif c0 > a:  # as the full matrix computes block pair (i, j), i < j
            xj = read_rows(store, lv.rows, c0, c1, out=cols[: c1 - c0])
            d2 = block_sq_distances(
                xi, xj, center=center, x_sq_norms=ni, precision=precision, device=device,
                keep_scratch=True,
            )  # fmt: skip
        else:  # as the full matrix stores (j, i), j < i: pair (j, i), transposed
            xj = read_rows(store, lv.rows, c0, c1, out=cols[: c1 - c0])
            nj = row_sq_norms(xj, center=center, precision=precision, device=device)
            d2 = block_sq_distances(
                xj, xi, center=center, x_sq_norms=nj, precision=precision, device=device,
                keep_scratch=True,
            ).T  # fmt: skip
        dist = np.sqrt(d2, out=d2)
        if c0 == a:
            np.fill_diagonal(dist, np.inf)  # a row is not its own neighbour
        if known > 0 and c0 < cols0:
            dist[:known, : cols0 - c0] = np.inf  # known rows: only the new columns
        best_d, best_i = merge_nearest(best_d, best_i, dist, c0)
    # the index first: a chunk of indices past its record marks a task killed in between
    write_block(store, lv.neighbor_index, best_i, rows=(a, e))
    write_block(store, lv.neighbor_distance, best_d, rows=(a, e))
    store.mark_done(lv.neighbor_stage, unit.key, unit.extent)
    return unit


def _ensure_arrays(store: Store, lv: Any, n: int, k: int, b: int, attrs: dict) -> None:
    if has_array(store, lv.neighbor_index) and array_attrs(store, lv.neighbor_index).get("k") != k:
        delete_array(store, lv.neighbor_index)  # another k (e.g. a grown small archive)
        delete_array(store, lv.neighbor_distance)
        store.clear_done(lv.neighbor_stage)
    created = False
    for name, dtype, fill in ((lv.neighbor_index, np.int64, -1),
                              (lv.neighbor_distance, np.float64, None)):  # fmt: skip
        created |= ensure_array(
            store, name, shape=(n, k), chunks=(b, k), dtype=dtype,
            dimension_names=(lv.level, "rank"), attrs={**attrs, "k": k}, fill_value=fill,
        )  # fmt: skip
    if created:
        store.clear_done(lv.neighbor_stage)


def run_neighbors(
    root: Root,
    *,
    descriptor: str = "cnn",
    k: int = DEFAULT_K,
    client: Any = None,
    block_size: int | None = None,
    precision: str = "mixed",
    device: str | None = None,
    on_done: Progress | None = None,
    lock: bool = True,
    level: str = "image",
) -> StageCounts:
    """Compute or update every row's exact ``k`` nearest other rows, without the matrix.

    Needs every row done (as :func:`~microscale.stages.distances.run_distances`). The
    driver computes the kernel's centre, creates or grows the two ``(n, k)`` arrays in
    ``(block_size, k)`` chunks (recreating them when ``k`` changed: ``min(k, n - 1)``
    grows with a small archive), plans the row blocks without a matching record
    (:func:`plan_neighbor_blocks`) and runs one task per block
    (:func:`compute_neighbor_block`).

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    k : int, optional
        Neighbours per row (default 5; at most ``n - 1`` are kept).
    client : distributed.Client, optional
    block_size : int, optional
        Rows per block, fixed when the arrays are created; default as for the full
        matrix (:func:`~microscale.stages.distances.auto_block_size`).
    precision, device
        Passed to the kernel.
    on_done : callable, optional
        ``on_done(done, total)``, in row blocks.
    lock : bool, optional
    level : {"image", "tile"}, optional

    Returns
    -------
    StageCounts
        Row blocks computed (or updated) and skipped as done.

    Examples
    --------
    >>> run_neighbors("store", descriptor="ps", k=5)  # doctest: +SKIP
    StageCounts(computed=3, skipped=0)
    """
    lv = distance_level(descriptor, level)
    store = as_store(root)
    with locked(store, lock):
        require_rows(store, descriptor, level)
        n = lv.n(store)
        k = _k_for(n, k)
        itemsize = feature_dtype(descriptor).itemsize
        b = rows_per_block(store, lv.neighbor_index, lv.rows, itemsize, block_size, client=client)
        ensure_center(store, descriptor, level)
        attrs = {"descriptor": descriptor, "precision": precision, "level": level,
                 "sketch": array_attrs(store, lv.rows).get("sketch")}  # fmt: skip
        _ensure_arrays(store, lv, n, k, b, attrs)
        todo = plan_neighbor_blocks(store, descriptor=descriptor, k=k, level=level)
        try:
            run_units(
                compute_neighbor_block,
                root_path(root),
                todo,
                client=client,
                on_done=on_done,
                descriptor=descriptor,
                precision=precision,
                device=device,
                level=level,
            )
        finally:
            release_scratch(client)
        total = len(row_ranges(n, b))
        return StageCounts(computed=len(todo), skipped=total - len(todo))
