"""Stage 3, ``"landmarks"`` mode: every row's exact k nearest neighbours, streamed.

Outlier scores and the map's click-to-neighbours need only each row's ``k`` nearest other
rows. :func:`run_neighbors` finds them exactly without the (n, n) matrix, on disk or in
memory, in two passes of Dask tasks over blocks of ``b`` rows:

1. **Pairs** (:func:`compute_neighbor_pass`, one task per row block ``i``): the block
   pairs ``(i, j)``, ``j >= i``, each through the same exact kernel as the full matrix
   and called exactly as the full matrix calls it
   (:func:`microscale.distance.block_sq_distances`: the block against itself as a
   diagonal block, ``(i, j)`` with block ``i`` as ``X``), so that with the same block
   size and centre every distance is bitwise the full matrix's. Each pair is computed
   once and serves both sides: the ``k`` nearest of rows ``i`` among columns ``j`` and
   of rows ``j`` among columns ``i`` (:func:`microscale.neighbors.merge_nearest`: ties go
   to the lower index) are written as *partial lists*, ``(n, n_blocks, k)`` arrays in
   ``(b, 1, k)`` chunks: the chunk ``(rows j, block i)`` is written by task ``i`` alone.
2. **Lists** (:func:`compute_neighbor_block`, one task per row block): merges its rows'
   partial lists (and the stored lists of rows that already had some) into the final
   ``neighbors/<d>/index`` (n, k) int64 and ``neighbors/<d>/distance`` (n, k) float64,
   ``(b, k)`` chunks, then its record.

The partial lists (``16 n (n / b) k`` bytes) are deleted when the stage ends. Cost:
``n^2 / 2`` pairs through the kernel, as the full matrix, but nothing of size ``n^2``
written; ``n^2 d / (2 b)`` bytes of row reads; per task the memory of a full-matrix task.

Growth: a record says which rows of a block it covers and against how many columns.
When the archive has grown from ``n0`` to ``n`` rows, only the pairs that meet a new row
are computed: an old row's list is updated where a new image enters its top k, a new
row gets its k nearest among all ``n``. A stored list that a killed task wrote after its
record (neighbours past the recorded columns) is recomputed whole.
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

__all__ = [
    "NeighborBlock",
    "NeighborPass",
    "compute_neighbor_block",
    "compute_neighbor_pass",
    "plan_neighbor_blocks",
    "plan_neighbor_passes",
    "run_neighbors",
]


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


def _valid_lists(store: Store, lv: Any, unit: NeighborBlock) -> bool:
    """Whether the stored lists of the unit's known rows are those of its record."""
    idx = read_rows(store, lv.neighbor_index, unit.start, unit.known_stop)
    dist = read_rows(store, lv.neighbor_distance, unit.start, unit.known_stop)
    return bool((idx >= 0).all() and (idx < unit.known_cols).all() and np.isfinite(dist).all())


def plan_neighbor_blocks(
    store: Root, *, descriptor: str = "cnn", k: int = DEFAULT_K, level: str = "image"
) -> list[NeighborBlock]:
    """Every row block with what its stored lists already cover, in order.

    A block is done when ``known_stop == stop`` and ``known_cols == n``. Needs
    ``neighbors/<d>/index`` to exist (its chunk is the block size).
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
            out.append(NeighborBlock(i, a, e, n, k, e, n))
            continue
        try:
            (r0, r1), (c0, c1), rk = rec["rows"], rec["cols"], rec["k"]
        except (TypeError, KeyError, ValueError):
            r0 = None
        if r0 == a and rk == k and c0 == 0 and a < r1 <= e and r1 <= c1 <= n:
            known = NeighborBlock(i, a, e, n, k, int(r1), int(c1))
            if _valid_lists(store, lv, known):  # else written past its record: redo it
                unit = known
        out.append(unit)
    return out


def _done(block: NeighborBlock) -> bool:
    return block.known_stop == block.stop and block.known_cols == block.n


def _needs(rows: NeighborBlock, cols: NeighborBlock) -> bool:
    """Whether some row of ``rows`` still needs the columns of ``cols``."""
    return not _done(rows) and (rows.known_stop < rows.stop or cols.stop > rows.known_cols)


@dataclass(frozen=True)
class NeighborPass:
    """One task of the pairs pass: block ``row`` against the blocks ``cols`` (``>= row``).

    Attributes
    ----------
    row : NeighborBlock
    cols : tuple of NeighborBlock
        The blocks paired with ``row``, in order, from ``row`` itself on.
    """

    row: NeighborBlock
    cols: tuple[NeighborBlock, ...]

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return self.row.key

    @property
    def extent(self) -> dict[str, Any]:
        """What the record says was covered."""
        return {"n": self.row.n, "k": self.row.k, "cols": [c.index for c in self.cols]}


def plan_neighbor_passes(blocks: list[NeighborBlock]) -> list[NeighborPass]:
    """The pairs pass of ``blocks`` (from :func:`plan_neighbor_blocks`): the block pairs
    ``(i, j)``, ``j >= i``, whose distances some row of either block still needs."""
    out = []
    for i, row in enumerate(blocks):
        cols = tuple(
            col for col in blocks[i:]
            if _needs(row, col) or (col.index > row.index and _needs(col, row))
        )  # fmt: skip
        if cols:
            out.append(NeighborPass(row, cols))
    return out


def _fresh(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, k), np.inf), np.full((rows, k), -1, dtype=np.int64)


def _mask_known(dist: np.ndarray, block: NeighborBlock, col_start: int) -> np.ndarray:
    """``dist`` (rows of ``block``, columns from ``col_start``) without what its known
    rows already have: those rows keep only columns from ``block.known_cols`` on."""
    known = block.known_stop - block.start
    cut = block.known_cols - col_start
    if known > 0 and cut > 0:
        dist = dist.copy()
        dist[:known, :cut] = np.inf
    return dist


def compute_neighbor_pass(
    root: Root,
    unit: NeighborPass,
    *,
    descriptor: str = "cnn",
    precision: str = "mixed",
    device: str | None = None,
    level: str = "image",
) -> NeighborPass:
    """The pairs pass of one row block: partial k-nearest lists on both sides of each pair.

    See the module docstring. Peak memory, for ``b``-row blocks of ``d`` features of
    ``s`` bytes: ``2 b d s`` (the block and one paired block, reused buffers), ``8 b^2``
    (a distance block and a copy) and the kernel's scratch: a full-matrix task's.
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    lv = distance_level(descriptor, level)
    store = as_store(root)
    center = read_array(store, lv.center)
    b = array_chunks(store, lv.neighbor_index)[0]
    width = array_shape(store, lv.rows)[1]
    dtype = feature_dtype(descriptor)
    row, k = unit.row, unit.row.k
    a, e = row.start, row.stop
    xi = read_rows(store, lv.rows, a, e, out=scratch.buffer("knn.rows", (b, width), dtype)[: e - a])
    ni = row_sq_norms(xi, center=center, precision=precision, device=device)
    own_d, own_i = _fresh(e - a, k)
    buf = scratch.buffer("knn.cols", (b, width), dtype)
    for col in unit.cols:
        c0, c1 = col.start, col.stop
        if col.index == row.index:  # the block against itself: symmetric, zero diagonal
            d2 = block_sq_distances(
                xi, None, center=center, x_sq_norms=ni, precision=precision, device=device,
                keep_scratch=True,
            )  # fmt: skip
        else:  # block pair (i, j), i < j, as the full matrix computes it
            xj = read_rows(store, lv.rows, c0, c1, out=buf[: c1 - c0])
            d2 = block_sq_distances(
                xi, xj, center=center, x_sq_norms=ni, precision=precision, device=device,
                keep_scratch=True,
            )  # fmt: skip
        dist = np.sqrt(d2, out=d2)
        if col.index == row.index:
            np.fill_diagonal(dist, np.inf)  # a row is not its own neighbour
        if _needs(row, col):
            own_d, own_i = merge_nearest(own_d, own_i, _mask_known(dist, row, c0), c0)
        if col.index > row.index and _needs(col, row):
            their_d, their_i = merge_nearest(*_fresh(c1 - c0, k), _mask_known(dist.T, col, a), a)
            write_block(store, lv.partial_index, their_i[:, None], rows=(c0, c1),
                        cols=(row.index, row.index + 1))  # fmt: skip
            write_block(store, lv.partial_distance, their_d[:, None], rows=(c0, c1),
                        cols=(row.index, row.index + 1))  # fmt: skip
    if not _done(row):
        write_block(store, lv.partial_index, own_i[:, None], rows=(a, e),
                    cols=(row.index, row.index + 1))  # fmt: skip
        write_block(store, lv.partial_distance, own_d[:, None], rows=(a, e),
                    cols=(row.index, row.index + 1))  # fmt: skip
    store.mark_done(lv.neighbor_pass_stage, unit.key, unit.extent)
    return unit


def compute_neighbor_block(
    root: Root,
    unit: NeighborBlock,
    *,
    descriptor: str = "cnn",
    level: str = "image",
) -> NeighborBlock:
    """The final k nearest of one block of rows: its stored and partial lists, merged.

    Reads the block's rows of the partial lists (``b * n_blocks * k`` entries; chunks no
    pair wrote are empty) and, for rows that already had lists, those; writes the index
    chunk, then the distances, then the record (a chunk of indices past its record marks
    a task killed in between).
    """
    lv = distance_level(descriptor, level)
    store = as_store(root)
    a, e, k = unit.start, unit.stop, unit.k
    best_d, best_i = _fresh(e - a, k)
    if unit.known_stop > a:
        best_i[: unit.known_stop - a] = read_rows(store, lv.neighbor_index, a, unit.known_stop)
        best_d[: unit.known_stop - a] = read_rows(store, lv.neighbor_distance, a, unit.known_stop)
    part_i = read_rows(store, lv.partial_index, a, e)  # (rows, blocks, k)
    part_d = read_rows(store, lv.partial_distance, a, e)
    r = e - a
    best_d, best_i = merge_nearest(
        best_d, best_i, part_d.reshape(r, -1), indices=part_i.reshape(r, -1)
    )
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


def _ensure_partials(store: Store, lv: Any, n: int, k: int, b: int, nb: int) -> None:
    """The partial lists of this round: left by a killed run of the same round, or new."""
    want = {"n": n, "k": k, "blocks": nb}
    if has_array(store, lv.partial_index):
        have = array_attrs(store, lv.partial_index)
        if {key: have.get(key) for key in want} == want:
            return
        delete_array(store, lv.partial_index)  # another round's: the archive grew since
        delete_array(store, lv.partial_distance)
    store.clear_done(lv.neighbor_pass_stage)
    for name, dtype, fill in ((lv.partial_index, np.int64, -1),
                              (lv.partial_distance, np.float64, None)):  # fmt: skip
        ensure_array(
            store, name, shape=(n, nb, k), chunks=(b, 1, k), dtype=dtype,
            dimension_names=(lv.level, "block", "rank"), attrs=want, fill_value=fill,
        )  # fmt: skip


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
        ``on_done(done, total)``, in block pairs of the pairs pass.
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
        blocks = plan_neighbor_blocks(store, descriptor=descriptor, k=k, level=level)
        todo = [u for u in blocks if not _done(u)]
        passes = plan_neighbor_passes(blocks)
        if todo:
            _ensure_partials(store, lv, n, k, b, len(blocks))
        pending = [p for p in passes if not store.is_done(lv.neighbor_pass_stage, p.key, p.extent)]
        options = {"descriptor": descriptor, "level": level}
        try:
            run_units(
                compute_neighbor_pass, root_path(root), pending, client=client,
                on_done=on_done, sizes=[len(p.cols) for p in pending], precision=precision,
                device=device, **options,
            )  # fmt: skip
            run_units(
                compute_neighbor_block, root_path(root), todo, client=client, on_done=None,
                **options,
            )  # fmt: skip
        finally:
            release_scratch(client)
        for name in (lv.partial_index, lv.partial_distance):  # all lists final: not needed
            delete_array(store, name)
        store.clear_done(lv.neighbor_pass_stage)
        total = len(row_ranges(n, b))
        return StageCounts(computed=len(todo), skipped=total - len(todo))
