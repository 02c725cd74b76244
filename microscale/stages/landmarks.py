"""Stage 3, ``"landmarks"`` mode: the (n, m) distances from every row to m landmarks.

Landmark MDS (:mod:`microscale.landmark`) needs only the distances to ``m`` landmarks, so
above ``max_dense`` rows the distance stage computes those instead of the (n, n) matrix:
``n m`` pairs instead of ``n^2 / 2``, ``8 n m`` bytes of disk (0.8 GB at n = 10^5, m =
1000) instead of ``8 n^2`` (80 GB).

- :func:`choose_store_landmarks` picks the landmarks once per store and records them
  (``landmarks/<d>``: their row indices, with how they were chosen; ``landmark_vectors/<d>``:
  a copy of their rows, so that a task reads one small array instead of ``m`` scattered
  rows). Later runs of a growing archive keep them.
- :func:`run_landmark_distances` plans the row blocks without a completion record
  (:func:`plan_landmark_blocks`) and runs :func:`compute_landmark_blocks` on them, here or
  as Dask tasks: each reads a block of rows and calls the same exact kernel as the full
  matrix (:func:`microscale.distance.block_sq_distances`) against the landmark rows, and
  writes whole chunks ``(block, m)`` of ``landmark_distances/<d>``, then its record. A
  grown archive computes its new rows only (and the last partial block again): a new
  image costs ``m`` distances.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from microscale import scratch
from microscale._validation import check_one_of, check_positive_int
from microscale.errors import StoreError
from microscale.stages._runner import (
    Batch,
    Progress,
    Root,
    StageCounts,
    as_store,
    locked,
    row_ranges,
)
from microscale.stages.distances import (
    distance_level,
    ensure_center,
    require_rows,
    rows_per_block,
    run_kernel_units,
)
from microscale.stages.features import feature_dtype
from microscale.store import (
    Store,
    array_attrs,
    array_shape,
    delete_array,
    ensure_array,
    has_array,
    read_array,
    read_row_selection,
    read_rows,
    write_array,
    write_block,
)

__all__ = [
    "DEFAULT_LANDMARKS",
    "LANDMARK_METHOD",
    "LANDMARK_METHODS",
    "MAXMIN_POOL_BYTES",
    "choose_store_landmarks",
    "compute_landmark_blocks",
    "plan_landmark_blocks",
    "run_landmark_distances",
]

_log = logging.getLogger(__name__)

#: Landmarks per store by default (as landmark MDS from the full matrix uses).
DEFAULT_LANDMARKS = 1000
#: How landmarks can be chosen: seeded uniform random rows, or MaxMin (farthest point).
LANDMARK_METHODS: tuple[str, ...] = ("random", "maxmin")
#: The default choice. Measured by ``benchmarks/bench_landmark_choice.py`` (n = 3000,
#: m = 100 and 300, D* = 2 and 3, 3 seeds): random landmarks gave the lower full-matrix
#: stress in all 12 cases, by 19-59 % on texture-like vectors (MaxMin spends its landmarks
#: on the rim and the outliers) and 10-13 % on a curved 3-D manifold.
LANDMARK_METHOD = "random"
#: MaxMin runs over a seeded random pool of rows held in memory: at most this many bytes of
#: them (1 GiB: 130,000 sketches of 2048, 870 full texture vectors), and at least ``m``.
MAXMIN_POOL_BYTES = 2**30
#: Row blocks per landmark-distance task.
BLOCKS_PER_TASK = 4


def _landmark_settings(method: str, random_state: int | None, requested: int) -> dict[str, Any]:
    return {"method": method, "random_state": random_state, "requested": requested}


def _maxmin(store: Store, rows: str, n: int, m: int, center: np.ndarray, seed: int | None,
            pool_bytes: int, device: str | None, itemsize: int) -> np.ndarray:  # fmt: skip
    """MaxMin landmarks among a seeded random pool of rows (exact kernel distances)."""
    from microscale.distance import block_sq_distances, row_sq_norms
    from microscale.landmark import choose_landmarks

    d = array_shape(store, rows)[1]
    size = min(n, max(m, int(pool_bytes) // max(1, d * itemsize)))
    rng = np.random.default_rng(seed)
    pool = np.arange(n) if size == n else np.sort(rng.choice(n, size=size, replace=False))
    X = read_row_selection(store, rows, pool)
    norms = row_sq_norms(X, center=center, device=device)

    def column(i: int) -> np.ndarray:
        d2 = block_sq_distances(
            X[i : i + 1], X, center=center, x_sq_norms=norms[i : i + 1], y_sq_norms=norms,
            device=device,
        )  # fmt: skip
        return np.sqrt(d2[0])

    return pool[choose_landmarks(size, m, random_state=rng, D_fn=column)]


def choose_store_landmarks(
    root: Root,
    *,
    descriptor: str = "cnn",
    level: str = "image",
    n_landmarks: int = DEFAULT_LANDMARKS,
    method: str = LANDMARK_METHOD,
    random_state: int | None = 0,
    pool_bytes: int = MAXMIN_POOL_BYTES,
    device: str | None = None,
) -> np.ndarray:
    """The store's landmarks: chosen once, recorded, and the same on every later run.

    ``min(n_landmarks, n)`` rows are chosen: uniformly at random (``method="random"``,
    seeded by ``random_state``; the default, see :data:`LANDMARK_METHOD`) or by MaxMin
    (greedy farthest point, :func:`microscale.landmark.choose_landmarks`) over a seeded
    random pool of at most ``pool_bytes`` of rows, with the exact distance kernel. Their
    indices are written to ``landmarks/<d>`` (attributes: the method, the seed, the count
    asked for) and their rows to ``landmark_vectors/<d>``. Driver-side, under the lock.

    A store keeps its landmarks as the archive grows (a new image then costs ``m``
    distances), with one exception: landmarks that were capped by a small archive (fewer
    rows than asked for) are chosen again once the archive has more rows, and their
    distances recomputed (a small archive's, so cheap).

    Returns
    -------
    (m,) int64 ndarray
        Row indices of the landmarks (sorted for ``"random"``, in order of choice for
        ``"maxmin"``).

    Raises
    ------
    StoreError
        If the store's landmarks were chosen with other settings (another method, seed
        or count): delete ``landmarks/<d>`` to choose them again.
    """
    lv = distance_level(descriptor, level)
    method = check_one_of(method, "method", LANDMARK_METHODS)
    requested = check_positive_int(n_landmarks, "n_landmarks")
    store = as_store(root)
    n = lv.n(store)
    want = _landmark_settings(method, random_state, requested)
    if has_array(store, lv.landmarks):
        have = array_attrs(store, lv.landmarks)
        stored = read_array(store, lv.landmarks).astype(np.int64)
        same = {k: have.get(k) for k in want} == want
        capped = len(stored) < requested and len(stored) < n
        if same and not capped:
            return stored
        if not same:
            raise StoreError(
                f"The landmarks of {store.root} ({lv.landmarks!r}) were chosen with "
                f"{ {k: have.get(k) for k in want} }, not {want}. Pass those settings, or "
                f"delete {lv.landmarks!r} (and {lv.landmark_matrix!r}) to choose them again."
            )
        _log.info("%s: %d landmarks were capped by a smaller archive; choosing %d",
                  lv.landmarks, len(stored), min(requested, n))  # fmt: skip
        for name in (lv.landmark_matrix, lv.landmark_vectors, lv.landmarks):
            delete_array(store, name)
        store.clear_done(lv.landmark_stage)
    m = min(requested, n)
    if method == "random":
        from microscale.landmark import choose_landmarks

        idx = choose_landmarks(n, m, random_state=random_state)
    else:
        center = read_array(store, lv.center)
        itemsize = feature_dtype(descriptor).itemsize
        idx = _maxmin(store, lv.rows, n, m, center, random_state, pool_bytes, device, itemsize)
    idx = np.asarray(idx, dtype=np.int64)
    write_array(store, lv.landmark_vectors, read_row_selection(store, lv.rows, idx))
    write_array(store, lv.landmarks, idx, attrs={**want, "n_rows": n})
    return idx


def plan_landmark_blocks(
    store: Root, *, descriptor: str = "cnn", block_size: int, level: str = "image"
) -> list[Batch]:
    """Row blocks of ``landmark_distances/<d>`` without a matching completion record.

    A block's record covers its rows and the landmark count; the last block of a grown
    archive (more rows) is planned again.
    """
    store = as_store(store)
    lv = distance_level(descriptor, level)
    m = len(read_array(store, lv.landmarks)) if has_array(store, lv.landmarks) else 0
    out = []
    for i, (a, b) in enumerate(row_ranges(lv.n(store), block_size)):
        batch = Batch(i, a, b)
        if not store.is_done(lv.landmark_stage, batch.key, {**batch.extent, "landmarks": m}):
            out.append(batch)
    return out


def compute_landmark_blocks(
    root: Root,
    batches: Sequence[Batch],
    *,
    descriptor: str = "cnn",
    precision: str = "mixed",
    device: str | None = None,
    level: str = "image",
) -> list[Batch]:
    """Compute row blocks of the landmark distances, write them, mark each done.

    For each block of rows ``a:b`` the rows are read into a reused buffer
    (:mod:`microscale.scratch`), :func:`microscale.distance.block_sq_distances` is called
    against the stored landmark rows with the stored centre, and the square root is
    written as the whole chunk row ``(a:b, :m)``; the distance of a landmark to itself is
    exactly 0, as on the full matrix's diagonal. Memory: ``b d s`` for the rows, ``m d s``
    for the landmarks, ``8 b m`` for the result, and the kernel's scratch.
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    lv = distance_level(descriptor, level)
    store = as_store(root)
    center = read_array(store, lv.center)
    idx = read_array(store, lv.landmarks).astype(np.int64)
    L = read_array(store, lv.landmark_vectors)
    m = len(idx)
    nl = row_sq_norms(L, center=center, precision=precision, device=device)
    width = array_shape(store, lv.rows)[1]
    rows = max((b.stop - b.start for b in batches), default=0)
    buf = scratch.buffer("landmarks.rows", (rows, width), feature_dtype(descriptor))
    for batch in batches:
        a, b = batch.start, batch.stop
        x = read_rows(store, lv.rows, a, b, out=buf[: b - a])
        d2 = block_sq_distances(
            x, L, center=center, y_sq_norms=nl, precision=precision, device=device,
            keep_scratch=True,
        )  # fmt: skip
        dist = np.sqrt(d2, out=d2)
        own = np.flatnonzero((idx >= a) & (idx < b))
        dist[idx[own] - a, own] = 0.0
        write_block(store, lv.landmark_matrix, dist, rows=(a, b))
        store.mark_done(lv.landmark_stage, batch.key, {**batch.extent, "landmarks": m})
    return list(batches)


def run_landmark_distances(
    root: Root,
    *,
    descriptor: str = "cnn",
    client: Any = None,
    block_size: int | None = None,
    n_landmarks: int = DEFAULT_LANDMARKS,
    method: str = LANDMARK_METHOD,
    random_state: int | None = 0,
    precision: str = "mixed",
    device: str | None = None,
    on_done: Progress | None = None,
    lock: bool = True,
    level: str = "image",
) -> StageCounts:
    """Compute the missing row blocks of the (n, m) distances to the store's landmarks.

    Needs every row done (image features, or tile features at ``level="tile"``). The
    driver computes the kernel's centre (as :func:`~microscale.stages.distances.run_distances`
    does), chooses or reads the landmarks (:func:`choose_store_landmarks`), creates or
    grows ``landmark_distances/<d>`` in ``(block_size, m)`` chunks, and submits the
    planned row blocks, :data:`BLOCKS_PER_TASK` per task.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    client : distributed.Client, optional
        Run the tasks on Dask; None runs them here.
    block_size : int, optional
        Rows per chunk, fixed when the array is created; default as for the full matrix
        (:func:`~microscale.stages.distances.auto_block_size`).
    n_landmarks, method, random_state
        See :func:`choose_store_landmarks`.
    precision, device
        Passed to the kernel.
    on_done : callable, optional
        ``on_done(done, total)``, in row blocks.
    lock : bool, optional
        Hold the store's run lock (default).
    level : {"image", "tile"}, optional

    Returns
    -------
    StageCounts
        Row blocks computed and skipped as done.
    """
    lv = distance_level(descriptor, level)
    store = as_store(root)
    with locked(store, lock):
        require_rows(store, descriptor, level)
        n = lv.n(store)
        itemsize = feature_dtype(descriptor).itemsize
        b = rows_per_block(store, lv.landmark_matrix, lv.rows, itemsize, block_size, client=client)
        ensure_center(store, descriptor, level)
        idx = choose_store_landmarks(
            store, descriptor=descriptor, level=level, n_landmarks=n_landmarks, method=method,
            random_state=random_state, device=device,
        )  # fmt: skip
        m = len(idx)
        created = ensure_array(
            store,
            lv.landmark_matrix,
            shape=(n, m),
            chunks=(b, m),
            dtype=np.float64,
            dimension_names=(level, "landmark"),
            attrs={
                "descriptor": descriptor,
                "precision": precision,
                "level": level,
                "n_landmarks": m,
                "sketch": array_attrs(store, lv.rows).get("sketch"),
            },
        )
        if created:
            store.clear_done(lv.landmark_stage)
        todo = plan_landmark_blocks(store, descriptor=descriptor, block_size=b, level=level)
        groups = [list(todo[i : i + BLOCKS_PER_TASK]) for i in range(0, len(todo), BLOCKS_PER_TASK)]
        run_kernel_units(
            compute_landmark_blocks, root, groups, client=client, on_done=on_done,
            descriptor=descriptor, precision=precision, device=device, level=level,
        )  # fmt: skip
        total = len(row_ranges(n, b))
        return StageCounts(computed=len(todo), skipped=total - len(todo))
