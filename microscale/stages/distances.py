"""Stage 3, distances: the exact (n, n) distance matrix between image (or tile) features.

:func:`run_distances` computes it out of core, one task per group of block pairs
``(i, j)``, ``i <= j``, :func:`compute_distance_blocks`, each calling the kernel
:func:`microscale.distance.block_sq_distances` and writing chunks ``(i, j)`` and
``(j, i)``. :class:`DistanceLevel` says where a level's rows, matrix, centre, records and
embeddings live in the store.

That is the ``"full"`` mode. Above ``max_dense`` rows the stage runs in the
``"landmarks"`` mode instead (:func:`distance_mode`): the (n, m) distances to ``m``
landmarks (:mod:`microscale.stages.landmarks`) and each row's exact ``k`` nearest
neighbours, streamed (:mod:`microscale.stages.knn`); the (n, n) matrix is never built.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from microscale import scratch
from microscale._validation import check_one_of, check_positive_int
from microscale.errors import IncompleteStageError, StoreError
from microscale.stages._runner import (
    BlockPair,
    Progress,
    Root,
    StageCounts,
    as_store,
    check_descriptor,
    drop_damaged,
    locked,
    require_done,
    require_intact,
    root_path,
    row_ranges,
    run_units,
)
from microscale.stages.block_plan import block_ranges, group_pairs, plan_block_reads
from microscale.stages.features import feature_dtype, require_features
from microscale.stages.image_features import image_features, plan_image_groups
from microscale.store import (
    LEVELS,
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    ensure_distance_matrix,
    has_array,
    read_array,
    read_rows,
    write_array,
    write_block,
)

__all__ = [
    "AUTO_BLOCK_SIZES",
    "BLOCK_MEMORY_FRACTION",
    "DEFAULT_PAIRS_PER_TASK",
    "DISTANCE_MODES",
    "DistanceLevel",
    "MAX_DENSE",
    "READ_AHEAD",
    "auto_block_size",
    "compute_distance_block",
    "compute_distance_blocks",
    "distance_level",
    "distance_mode",
    "distance_task_bytes",
    "ensure_center",
    "image_sums_total",
    "plan_distance_blocks",
    "release_scratch",
    "require_rows",
    "rows_per_block",
    "run_distances",
    "run_kernel_units",
    "task_memory",
]

_log = logging.getLogger(__name__)

#: Block pairs per distance task: consecutive pairs share a block, read once
#: (:mod:`microscale.stages.block_plan`).
DEFAULT_PAIRS_PER_TASK = 4
#: Block sizes ``block_size=None`` chooses from, largest first: 1024 is the kernel's
#: measured optimum, and its rate falls with the block (67 / 63 / 53 % of the GEMM peak at
#: 1024 / 512 / 256 on the CPU; see microscale.distance).
AUTO_BLOCK_SIZES: tuple[int, ...] = (1024, 768, 512, 384, 256, 128, 64)
#: Share of a task slot's memory (a Dask worker's ``memory_limit / nthreads``, or the
#: available memory without a client) that ``block_size=None`` lets one distance task use:
#: Dask pauses a worker at 80 % and the rest of the process needs room too.
BLOCK_MEMORY_FRACTION = 0.5
#: Row blocks a distance task reads ahead, in a thread, while the kernel runs (0: none).
#: Each costs one more block in memory (``b * d * s`` bytes). None: one on a GPU and none
#: on a CPU, and none at all where a third block does not fit in a task slot's share of
#: memory (:data:`BLOCK_MEMORY_FRACTION`, as for the block size). On a CPU the read (a
#: copy from the page cache, :func:`microscale.store.read_rows`) competes with the GEMM
#: for the cores: on the 2-core dev VM reading ahead made the stage 1.0-1.13x as fast in
#: ``profile_distances.py --store --read-ahead`` (three runs), and ``bench_distances.py
#: --read-ahead`` gave 0.5-1.9x over six runs, mixed with an effect of the runs' order
#: (the first-listed image row, next to the in-memory kernel in every round, was the
#: slowest image row in four): no gain shown. Where reads wait on storage
#: rather than on the CPU (a cold page cache, a network file system) set it to 1.
READ_AHEAD: int | None = None
_BUFFER_WAIT_S = 600.0  # see _BlockReader._load
#: What the distance stage computes: the whole (n, n) matrix, or only the (n, m) block of
#: distances to ``m`` landmarks and each row's ``k`` nearest neighbours.
DISTANCE_MODES: tuple[str, ...] = ("full", "landmarks")
#: Most rows for which ``distances=None`` builds the full matrix (and ``embed`` runs dense
#: MDS): 10,000. At that size the matrix is 0.8 GB on disk and dense MDS holds about 33
#: bytes per entry, 3.3 GB in the driver, well inside a budget of 8 GB per process; the
#: budget is reached near 15,000 rows (7.4 GB), and at 10^5 rows the matrix alone would
#: be 80 GB of disk. Above it the stage computes ``N (m + k)`` numbers instead of ``N^2``
#: (docs/scaling.md).
MAX_DENSE = 10_000

# --------------------------------------------------------------------------- distances


@dataclass(frozen=True)
class DistanceLevel:
    """Where one level's rows, matrix, centre, records and embeddings live in the store.

    ``level="image"`` (default) maps images: rows are the pixel-weighted image features.
    ``level="tile"`` maps every tile: rows are the tile features themselves.
    """

    level: str
    descriptor: str

    @property
    def prefix(self) -> str:
        """``""`` for images, ``"tile_"`` for tiles: the prefix of the level's arrays."""
        return "" if self.level == "image" else "tile_"

    @property
    def rows(self) -> str:
        """The array whose rows are mapped."""
        base = "image_features" if self.level == "image" else "features"
        return f"{base}/{self.descriptor}"

    @property
    def matrix(self) -> str:
        """The (n, n) distance matrix."""
        return f"{self.prefix}distances/{self.descriptor}"

    @property
    def center(self) -> str:
        """The common centre of the distance kernel."""
        return f"{self.prefix}center/{self.descriptor}"

    @property
    def stage(self) -> str:
        """The stage name of the completion records."""
        return f"{self.prefix}distances.{self.descriptor}"

    def embedding(self, k: int) -> str:
        """The ``k``-dimensional embedding."""
        return f"{self.prefix}embeddings/{self.descriptor}/d{k}"

    @property
    def landmarks(self) -> str:
        """The (m,) row indices of the landmarks (landmarks mode)."""
        return f"{self.prefix}landmarks/{self.descriptor}"

    @property
    def landmark_vectors(self) -> str:
        """The (m, d) rows of the landmarks, copied once when they are chosen."""
        return f"{self.prefix}landmark_vectors/{self.descriptor}"

    @property
    def landmark_matrix(self) -> str:
        """The (n, m) distances from every row to the landmarks."""
        return f"{self.prefix}landmark_distances/{self.descriptor}"

    @property
    def landmark_stage(self) -> str:
        """The stage name of the landmark distances' completion records."""
        return f"{self.prefix}landmark_distances.{self.descriptor}"

    @property
    def neighbor_index(self) -> str:
        """The (n, k) indices of each row's nearest other rows, nearest first."""
        return f"{self.prefix}neighbors/{self.descriptor}/index"

    @property
    def neighbor_distance(self) -> str:
        """The (n, k) distances to them."""
        return f"{self.prefix}neighbors/{self.descriptor}/distance"

    @property
    def partial_index(self) -> str:
        """The (n, n_blocks, k) partial neighbour lists of the streamed k-NN (transient)."""
        return f"{self.prefix}neighbors/{self.descriptor}/partial_index"

    @property
    def partial_distance(self) -> str:
        """Their distances (transient)."""
        return f"{self.prefix}neighbors/{self.descriptor}/partial_distance"

    @property
    def neighbor_pass_stage(self) -> str:
        """The stage name of the streamed k-NN's pairs pass (transient records)."""
        return f"{self.prefix}neighbor_pairs.{self.descriptor}"

    @property
    def neighbor_stage(self) -> str:
        """The stage name of the streamed neighbours' completion records."""
        return f"{self.prefix}neighbors.{self.descriptor}"

    def n(self, store: Store) -> int:
        """Rows of the level in ``store``: its images or its tiles."""
        return store.n_images if self.level == "image" else store.n_tiles


def distance_level(descriptor: str, level: str) -> DistanceLevel:
    """The :class:`DistanceLevel` of ``descriptor`` at ``level``, both validated."""
    level = check_one_of(level, "level", LEVELS)
    return DistanceLevel(level, check_descriptor(descriptor))


def distance_mode(n: int, distances: str | None = None, *, max_dense: int = MAX_DENSE) -> str:
    """The distance mode of a map of ``n`` rows: ``distances``, or by size when None.

    Examples
    --------
    >>> distance_mode(5000), distance_mode(50_000), distance_mode(10, "landmarks")
    ('full', 'landmarks', 'landmarks')
    """
    max_dense = check_positive_int(max_dense, "max_dense")
    if distances is None:
        return "full" if n <= max_dense else "landmarks"
    return check_one_of(distances, "distances", DISTANCE_MODES)


def distance_task_bytes(
    block_size: int, n_features: int, itemsize: int = 4, *, blocks: int = 2
) -> int:
    """Peak memory of one distance task, in bytes (see :func:`compute_distance_blocks`).

    ``blocks`` row blocks (two, and one more read ahead), the distance block and its
    transpose, and the kernel's working memory, measured on the CPU as about 0.64 GB at
    1024 rows and 0.17 GB at 256 (scratch and threaded BLAS buffers): 3.2 GB at
    ``block_size = 1024`` for full texture vectors (305,888 float32), 50 MB for 2048-long
    sketches.
    """
    b, d = int(block_size), int(n_features)
    return blocks * b * d * itemsize + 2 * b * b * 8 + 625_000 * b


def _task_memory(client: Any) -> float:
    """Bytes one task slot may use: the smallest worker's limit per thread, or RAM here."""
    import psutil

    budgets = []
    if client is not None:
        for info in client.scheduler_info(n_workers=-1).get("workers", {}).values():
            limit, threads = info.get("memory_limit") or 0, max(1, info.get("nthreads") or 1)
            if limit:
                budgets.append(limit / threads)
    if budgets:
        return min(budgets)
    return float(psutil.virtual_memory().available)


def task_memory(client: Any) -> float:
    """Bytes one task slot may use: the smallest Dask worker's memory limit per thread, or
    the available memory here without a client."""
    return _task_memory(client)


def auto_block_size(n_features: int, memory: float, *, itemsize: int = 4) -> int:
    """The largest of :data:`AUTO_BLOCK_SIZES` whose task fits in a share of ``memory``.

    Parameters
    ----------
    n_features : int
        Length ``d`` of the rows.
    memory : float
        Bytes of one task slot; a task may use :data:`BLOCK_MEMORY_FRACTION` of it.
    itemsize : int, optional
        Bytes per feature (4 for texture vectors, 8 for power spectra).

    Returns
    -------
    int
        E.g. 1024 for full texture vectors with 8 GB per task slot, 512 with 4 GB.

    Examples
    --------
    >>> auto_block_size(305_888, 8e9), auto_block_size(305_888, 4e9), auto_block_size(2048, 2e9)
    (1024, 512, 1024)
    """
    budget = BLOCK_MEMORY_FRACTION * memory
    for b in AUTO_BLOCK_SIZES:
        if distance_task_bytes(b, n_features, itemsize) <= budget:
            return b
    return AUTO_BLOCK_SIZES[-1]


def _block_size(
    store: Store,
    descriptor: str,
    block_size: int | None,
    level: str = "image",
    *,
    client: Any = None,
) -> int:
    lv = distance_level(descriptor, level)
    name = lv.matrix
    if has_array(store, name):
        stored = array_chunks(store, name)[0]
        if block_size is not None and block_size != stored:
            raise StoreError(
                f"{name!r} in {store.root} is stored in blocks of {stored}; pass "
                f"block_size={stored} (or None), or delete {name!r} to recompute it."
            )
        return stored
    if block_size is not None:
        return check_positive_int(block_size, "block_size")
    d = array_shape(store, lv.rows)[1]
    itemsize = feature_dtype(descriptor).itemsize
    memory = _task_memory(client)
    b = auto_block_size(d, memory, itemsize=itemsize)
    _log.info(
        "%s: blocks of %d rows (%.2f GB per task, %.1f GB per task slot)",
        name, b, distance_task_bytes(b, d, itemsize) / 1e9, memory / 1e9,
    )  # fmt: skip
    return b


def rows_per_block(
    store: Store,
    name: str,
    rows: str,
    itemsize: int,
    block_size: int | None,
    *,
    client: Any = None,
) -> int:
    """Rows per chunk of a row-blocked result ``name`` computed from the rows ``rows``.

    The stored chunk when ``name`` exists (``block_size`` must then be None or equal to
    it); else ``block_size``; else :func:`auto_block_size` for a task slot's memory.
    """
    if has_array(store, name):
        stored = array_chunks(store, name)[0]
        if block_size is not None and block_size != stored:
            raise StoreError(
                f"{name!r} in {store.root} is stored in blocks of {stored}; pass "
                f"block_size={stored} (or None), or delete {name!r} to recompute it."
            )
        return stored
    if block_size is not None:
        return check_positive_int(block_size, "block_size")
    return auto_block_size(array_shape(store, rows)[1], _task_memory(client), itemsize=itemsize)


def plan_distance_blocks(
    store: Root, *, descriptor: str = "cnn", block_size: int | None = None, level: str = "image"
) -> list[BlockPair]:
    """Block pairs ``(i, j)``, ``i <= j``, of the distance matrix not yet done.

    Blocks are ``block_size`` images (the chunk of ``distances/<d>`` once it exists); a
    pair is stale when its row or column range grew (the last block of an archive that
    gained images).

    Returns
    -------
    list of BlockPair
        Sorted by ``(i, j)``.
    """
    store = as_store(store)
    lv = distance_level(descriptor, level)
    b = _block_size(store, descriptor, block_size, level)
    stage = lv.stage
    ranges = row_ranges(lv.n(store), b)
    pairs = [
        BlockPair(i, j, ranges[i], ranges[j])
        for i in range(len(ranges))
        for j in range(i, len(ranges))
    ]
    return [p for p in pairs if not store.is_done(stage, p.key, p.extent)]


def _heal_rows(store: Store, lv: DistanceLevel, todo: Sequence[BlockPair], *, client: Any) -> None:
    """Hash the rows the pairs ``todo`` read; recompute damaged image features first.

    Damaged image-feature groups are dropped and computed again here (from the tile
    features); damaged tile features (``level="tile"``) raise DamagedStoreError.
    """
    if not todo:
        return
    read = sorted({r for p in todo for r in (p.rows, p.cols)})
    if lv.level == "tile":
        c = array_chunks(store, lv.rows)[0]
        keys = sorted({f"{k:09d}" for a, b in read for k in range(a // c, -(-b // c))})
        how = f"run_features(descriptor={lv.descriptor!r})"
        require_intact(store, f"features.{lv.descriptor}", keys, how=how)
        return
    size = int(array_attrs(store, f"image_feature_sums/{lv.descriptor}")["images_per_group"])
    keys = sorted({f"{g:09d}" for a, b in read for g in range(a // size, -(-b // size))})
    if drop_damaged(store, f"image_features.{lv.descriptor}", full=True, keys=keys):
        image_features(store, descriptor=lv.descriptor, client=client, lock=False)


def _group_pairs(pairs: Sequence[BlockPair], per_task: int) -> list[list[BlockPair]]:
    """The tasks: runs of at most ``per_task`` pairs in which consecutive pairs share a
    block (:func:`microscale.stages.block_plan.group_pairs`)."""
    return group_pairs(pairs, per_task)


def _image_sums_done(store: Store, descriptor: str) -> bool:
    return has_array(store, f"image_feature_sums/{descriptor}") and not plan_image_groups(
        store, descriptor=descriptor
    )


def image_sums_total(store: Store, descriptor: str) -> np.ndarray:
    """The float64 sum of all image features of ``descriptor``, from the kept group sums.

    Divided by the number of images it is the distance stage's centre (and the query
    centre of :func:`microscale.search.similar`); no image feature is read.
    """
    sums = f"image_feature_sums/{descriptor}"
    total = np.zeros(array_shape(store, sums)[1])
    for start, stop in row_ranges(array_shape(store, sums)[0], 64):
        total += read_rows(store, sums, start, stop).sum(axis=0)
    return total


def _ensure_center(store: Store, descriptor: str, level: str = "image") -> np.ndarray:
    """The centre for this run, cached for n rows: the mean of the image features.

    Image level: the mean of the rows, from the sums the image-feature stage kept. Tile
    level: the same image mean when the image features are done and the rows are texture
    vectors (no pass over the tiles: any common vector gives the same exact distances,
    and the mean of the images is close to that of their tiles, which is all the
    kernel's speed and error bound ask of it); otherwise the mean of the tiles, one pass
    over them (power spectra: it also finds flat tiles, which have none).
    """
    lv = distance_level(descriptor, level)
    name = lv.center
    n = lv.n(store)
    if has_array(store, name) and array_attrs(store, name).get("n_images") == n:
        return read_array(store, name)
    if level == "image" or (descriptor == "cnn" and _image_sums_done(store, descriptor)):
        center = image_sums_total(store, descriptor) / store.n_images
    else:
        total = np.zeros(array_shape(store, lv.rows)[1])
        band = array_chunks(store, lv.rows)[0]
        buf = np.empty((min(band, n), len(total)), feature_dtype(descriptor))
        for start, stop in row_ranges(n, band):  # one reused buffer: no fresh pages per band
            rows = read_rows(store, lv.rows, start, stop, out=buf[: stop - start])
            total += rows.sum(axis=0, dtype=np.float64)
        if not np.isfinite(total).all():
            raise StoreError(
                f"Some tiles of {store.root} have no {descriptor!r} features (flat tiles have "
                "no power spectrum); map them with level='image', or with descriptor 'cnn'."
            )
        center = total / n
    if not np.isfinite(center).all():
        raise StoreError(
            f"The image features of {store.root} are not all finite; recompute them with "
            "image_features."
        )
    write_array(store, name, center, attrs={"n_images": n})
    return center


def require_rows(store: Store, descriptor: str, level: str = "image") -> None:
    """Raise IncompleteStageError unless the rows the distances are made of are all done."""
    if level == "tile":
        require_features(store, descriptor)
    elif not has_array(store, f"image_feature_sums/{descriptor}"):
        raise IncompleteStageError(
            f"The store {store.root} has no image features for {descriptor!r}; run "
            f"image_features(descriptor={descriptor!r}) first."
        )
    if level == "image":
        require_done(
            store,
            plan_image_groups(store, descriptor=descriptor),
            f"image_features.{descriptor}",
            f"image_features(descriptor={descriptor!r})",
        )


def ensure_center(store: Store, descriptor: str, level: str = "image") -> np.ndarray:
    """The distance kernel's centre for the current rows, computed and stored when stale.

    The mean of the image features (see ``run_distances``); driver-side, under the lock.
    """
    return _ensure_center(store, descriptor, level)


def _block_reads(pairs: Sequence[BlockPair]) -> list[tuple[int, int]]:
    """The row ranges :func:`compute_distance_blocks` reads, in the order it needs them."""
    ranges = block_ranges(pairs)
    return [ranges[k] for step in plan_block_reads(pairs) for k in step.read]


def _stage_read_ahead(
    store: Store, lv: DistanceLevel, block_size: int, *, client: Any
) -> int | None:
    """:data:`READ_AHEAD` for the stage's tasks: 0 where a third block does not fit a task
    slot's memory share; else None, which the task resolves for its device."""
    if READ_AHEAD is not None:
        return READ_AHEAD
    d = array_shape(store, lv.rows)[1]
    need = distance_task_bytes(block_size, d, feature_dtype(lv.descriptor).itemsize, blocks=3)
    return None if need <= BLOCK_MEMORY_FRACTION * _task_memory(client) else 0


def _read_ahead(device: str | None) -> int:
    if READ_AHEAD is not None:
        return READ_AHEAD
    from microscale.device import resolve_device

    return 1 if resolve_device(device).type == "cuda" else 0


class _BlockReader:
    """Row blocks read in a planned order into a few reused buffers.

    ``take()`` returns the next block (a view of a buffer); ``give_back(block)`` returns
    its buffer once the caller is done with it. Up to ``ahead`` later blocks are read in a
    thread meanwhile, so the reads (Zarr chunk reads: I/O and copies, outside the GIL)
    overlap the distance kernel. The ``2 + ahead`` buffers are this thread's
    :mod:`microscale.scratch` buffers, reused by the next task of the stage: reading into
    reused memory avoids the page faults of fresh memory, which on some machines cost
    more than the copy (see :func:`microscale.store.read_rows`). A caller holds at most
    two blocks (a row block and a column block) when it takes the next.
    """

    def __init__(
        self,
        read_into: Callable[[tuple[int, int], np.ndarray], object],
        ranges: Sequence[tuple[int, int]],
        *,
        width: int,
        dtype: np.dtype,
        ahead: int,
    ) -> None:
        self._read_into, self._ranges, self._ahead = read_into, list(ranges), max(0, ahead)
        rows = max((b - a for a, b in self._ranges), default=0)
        self._free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        for k in range(min(len(self._ranges), 2 + self._ahead)):
            self._free.put(scratch.buffer(f"distance.block.{k}", (rows, width), dtype))
        self._owner: dict[int, np.ndarray] = {}
        self._pending: collections.deque[Any] = collections.deque()
        self._next = 0
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="microscale-read") if self._ahead else None
        )
        self._fill()

    def _load(self, rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        # a free buffer always comes (the caller holds two); the timeout turns a bug into
        # an error instead of a hung task
        buf = self._free.get(timeout=_BUFFER_WAIT_S)
        block = buf[: rows[1] - rows[0]]
        self._read_into(rows, block)
        return block, buf

    def _fill(self) -> None:
        while (
            self._pool is not None
            and self._next < len(self._ranges)
            and len(self._pending) < self._ahead
        ):
            self._pending.append(self._pool.submit(self._load, self._ranges[self._next]))
            self._next += 1

    def take(self) -> np.ndarray:
        if self._pending:
            block, buf = self._pending.popleft().result()
        else:
            block, buf = self._load(self._ranges[self._next])
            self._next += 1
        self._owner[id(block)] = buf
        self._fill()
        return block

    def give_back(self, block: np.ndarray) -> None:
        self._free.put(self._owner.pop(id(block)))

    def __enter__(self) -> _BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def compute_distance_blocks(
    root: Root,
    pairs: Sequence[BlockPair],
    *,
    descriptor: str = "cnn",
    precision: str = "mixed",
    device: str | None = None,
    level: str = "image",
    read_ahead: int | None = None,
) -> list[BlockPair]:
    """Compute block pairs of the distance matrix, write them, mark each done.

    For each pair ``(i, j)`` the rows of blocks ``i`` and ``j`` of
    ``image_features/<d>`` are read, :func:`microscale.distance.block_sq_distances` is
    called with the centre stored by the driver (``Yb=None`` on the diagonal, which gives
    an exactly symmetric block with a zero diagonal), the square root is written to chunk
    ``(i, j)`` and its transpose to chunk ``(j, i)`` (so the matrix is exactly
    symmetric), and then the record is written. A block that consecutive pairs share is
    read, and its row norms computed, once: the task keeps it
    (:func:`microscale.stages.block_plan.plan_block_reads`; :func:`run_distances` orders
    the pairs so that consecutive pairs always share one). The rows are read straight
    from the chunk files into the task's buffers (:func:`microscale.store.read_rows`).

    Peak memory of a task, for blocks of ``b`` images of ``d`` features (``s`` bytes per
    feature: 4 for ``cnn``, 8 for ``ps``)::

        2 * b * d * s              the two row blocks (one on the diagonal)
        + 2 * b**2 * 8             the squared-distance block and its transpose
        + K(b)                     the kernel's working memory
        + 2 * d * 8                the centre (and its copy in the kernel)

    :func:`~microscale.distance.block_sq_distances` documents its scratch as
    ``2 * b * 16384 * 4 + 16 * b**2 * 4`` (38 MB at ``b = 256``, 200 MB at ``b = 1024``);
    measured on the CPU, ``K`` is about 0.17 GB and 0.64 GB (threaded BLAS buffers
    included). Measured peak RSS increase of one off-diagonal task at ``d = 305,888``
    (float32, 2-core CPU): 0.80 GB for ``b = 256``, 3.19 GB for ``b = 1024``; a diagonal
    task: 0.46 GB and 1.75 GB. Consecutive pairs of a task hold at most two row blocks
    at once, plus ``read_ahead`` block(s) being read in a thread while the kernel runs
    (:data:`READ_AHEAD`). On a GPU the blocks are also copied to device memory.
    The block buffers and the kernel's scratch are the thread's :mod:`microscale.scratch`
    buffers: the next task of the stage on that thread reuses them instead of faulting in
    fresh memory, and :func:`run_distances` releases them on every worker at the end.

    Parameters
    ----------
    root : path or Store
    pairs : sequence of BlockPair
        From :func:`plan_distance_blocks`.
    descriptor : {"cnn", "ps"}, optional
    precision : {"mixed", "float64"}, optional
        Passed to the kernel.
    device : str, optional
        Torch device; default the worker's GPU when it has one.
    read_ahead : int, optional
        Blocks to read ahead in a thread (:func:`run_distances` passes 0 where a third
        block would not fit). None: :data:`READ_AHEAD`, else 1 on a GPU and 0 on a CPU.

    Returns
    -------
    list of BlockPair
        ``pairs``, once written and recorded.
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    lv = distance_level(descriptor, level)
    store = as_store(root)
    feats, name, stage = lv.rows, lv.matrix, lv.stage
    center = read_array(store, lv.center)
    reader = _BlockReader(
        lambda r, out: read_rows(store, feats, *r, out=out),
        _block_reads(pairs),
        width=array_shape(store, feats)[1],
        dtype=feature_dtype(descriptor),
        ahead=_read_ahead(device) if read_ahead is None else read_ahead,
    )
    norms = functools.partial(row_sq_norms, center=center, precision=precision, device=device)
    with reader:
        held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # block -> (rows, their norms)
        for pair, step in zip(pairs, plan_block_reads(pairs), strict=True):
            for k in step.drop:  # before the reads: the reader's buffers are few
                reader.give_back(held.pop(k)[0])
            for k in step.read:
                block = reader.take()
                held[k] = (block, norms(block))
            (xi, ni), (xj, nj) = held[pair.i], held[pair.j]
            d2 = block_sq_distances(
                xi,
                None if pair.i == pair.j else xj,
                center=center,
                x_sq_norms=ni,
                y_sq_norms=None if pair.i == pair.j else nj,
                precision=precision,
                device=device,
                keep_scratch=True,
            )
            dist = np.sqrt(d2, out=d2)
            write_block(store, name, dist, rows=pair.rows, cols=pair.cols)
            if pair.i != pair.j:
                write_block(
                    store, name, np.ascontiguousarray(dist.T), rows=pair.cols, cols=pair.rows
                )
            covers = [(name, pair.rows, pair.cols), (name, pair.cols, pair.rows)]
            store.mark_done(stage, pair.key, pair.extent, covers=covers)
    return list(pairs)


def compute_distance_block(
    root: Root,
    pair: BlockPair,
    *,
    descriptor: str = "cnn",
    precision: str = "mixed",
    device: str | None = None,
) -> BlockPair:
    """One block pair; see :func:`compute_distance_blocks`."""
    return compute_distance_blocks(
        root, [pair], descriptor=descriptor, precision=precision, device=device
    )[0]


def release_scratch(client: Any) -> None:
    """Free the block buffers the stage's tasks kept (:mod:`microscale.scratch`), everywhere."""
    scratch.release()
    if client is None:
        return
    try:
        client.run(scratch.release)
    except Exception as exc:  # a lost cluster frees its memory anyway
        _log.warning("could not release the scratch buffers of the Dask workers: %s", exc)


def run_kernel_units(
    compute: Callable[..., Any],
    root: Root,
    groups: Sequence[Sequence[Any]],
    *,
    client: Any,
    on_done: Progress | None,
    **options: Any,
) -> None:
    """Run groups of block units of the distance kernel, then free their scratch buffers.

    :func:`run_units` with one unit per group member for the progress counts; the threads'
    block buffers (:mod:`microscale.scratch`) are released on the driver and on every
    worker when the stage ends, also on failure (:func:`release_scratch`).
    """
    try:
        run_units(
            compute,
            root_path(root),
            groups,
            client=client,
            on_done=on_done,
            sizes=[len(g) for g in groups],
            **options,
        )
    finally:
        release_scratch(client)


def run_distances(
    root: Root,
    *,
    descriptor: str = "cnn",
    client: Any = None,
    block_size: int | None = None,
    pairs_per_task: int = DEFAULT_PAIRS_PER_TASK,
    precision: str = "mixed",
    device: str | None = None,
    on_done: Progress | None = None,
    lock: bool = True,
    level: str = "image",
) -> StageCounts:
    """Compute the missing blocks of the (n, n) distance matrix between image features.

    With ``level="tile"`` the rows are the tiles (a map of every tile), stored apart as
    ``tile_distances/<d>`` with its own centre (the same image mean when the image
    features of texture vectors are done, else a pass over the tiles), records and
    embeddings.

    Needs every image feature done. The driver

    1. computes the centre, the float64 mean of all image features (from
       ``image_feature_sums``, without reading the features), and stores it as
       ``center/<d>``. It is recomputed when images were added, so blocks of one matrix
       may come from different centres: that is fine, because the kernel's distances are
       exact whatever the centre (the centre only makes them cheaper and keeps the error
       within the kernel's bound, 1e-6 relative, for every pair);
    2. creates or grows ``distances/<d>`` in ``(block_size, block_size)`` chunks;
    3. plans the pairs without a matching record (:func:`plan_distance_blocks`) and
       submits them in groups of up to ``pairs_per_task`` consecutive pairs of an order in
       which consecutive pairs share a block (one Dask task per group:
       :func:`compute_distance_blocks`; :mod:`microscale.stages.block_plan`), reading a
       block ahead on a GPU where memory allows (:data:`READ_AHEAD`);
    4. releases the buffers the tasks kept between them (:mod:`microscale.scratch`), on
       every worker, even when the stage fails.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    client : distributed.Client, optional
        Run the groups as Dask tasks; None runs them here.
    block_size : int, optional
        Rows per block, fixed when the matrix is created. Peak memory per task is about
        ``2 * block_size * d * 4`` bytes plus the kernel's working memory: 0.8 GB at 256
        and 3.2 GB at 1024 for texture vectors (:func:`distance_task_bytes`). None (the
        default) takes the stored block size, or for a new matrix
        :func:`auto_block_size`: the largest block up to 1024 (the kernel's measured
        optimum) whose task fits in half of a task slot's memory (the smallest Dask
        worker's ``memory_limit`` per thread; the available memory without a client).
    pairs_per_task : int, optional
        Block pairs per task (a block two consecutive pairs share is read once).
    precision : {"mixed", "float64"}, optional
        Kernel precision; recorded with the matrix.
    device : str, optional
        Torch device of the kernel.
    on_done : callable, optional
        ``on_done(done, total)``, in block pairs.
    lock : bool, optional
        Hold the store's run lock (default).

    Returns
    -------
    StageCounts
        Block pairs computed and skipped as done.
    """
    lv = distance_level(descriptor, level)
    per_task = check_positive_int(pairs_per_task, "pairs_per_task")
    store = as_store(root)
    with locked(store, lock):
        require_rows(store, descriptor, level)
        n = lv.n(store)
        b = _block_size(store, descriptor, block_size, level, client=client)
        created = ensure_distance_matrix(
            store,
            lv.matrix,
            n,
            b,
            attrs={
                "descriptor": descriptor,
                "precision": precision,
                "level": level,
                # provenance: distances between sketches estimate those between vectors
                "sketch": array_attrs(store, lv.rows).get("sketch"),
            },
        )
        if created:
            store.clear_done(lv.stage)
        # every block is hashed (the matrix the embedding reads): damaged pairs are redone
        drop_damaged(store, lv.stage, full=True)
        todo = plan_distance_blocks(store, descriptor=descriptor, block_size=b, level=level)
        _heal_rows(store, lv, todo, client=client)
        _ensure_center(store, descriptor, level)
        nb = len(row_ranges(n, b))
        groups = _group_pairs(todo, per_task)
        run_kernel_units(
            compute_distance_blocks, root, groups, client=client, on_done=on_done,
            descriptor=descriptor, precision=precision, device=device, level=level,
            read_ahead=_stage_read_ahead(store, lv, b, client=client),
        )  # fmt: skip
        return StageCounts(computed=len(todo), skipped=nb * (nb + 1) // 2 - len(todo))
