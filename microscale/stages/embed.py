"""Stage 4, embedding: metric MDS of a store's distance matrix, the final reduction.

:func:`embed` runs in one process: dense MDS of the whole matrix up to
:data:`DENSE_LIMIT` rows, beyond that landmark MDS that reads the matrix in row bands and
reports the stress of the full matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from microscale._validation import check_positive_int, renamed
from microscale.errors import IncompleteStageError
from microscale.stages._runner import (
    Root,
    as_store,
    locked,
    require_done,
    require_intact,
    row_ranges,
)
from microscale.stages.distances import DistanceLevel, distance_level, plan_distance_blocks
from microscale.store import (
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    has_array,
    image_table,
    read_array,
    read_rows,
    tile_table,
    write_array,
)

__all__ = ["DEFAULT_LANDMARKS", "DENSE_LIMIT", "embed", "embedding_inputs"]

_log = logging.getLogger(__name__)

#: Most rows :func:`embed` gives to dense MDS; larger maps use landmark MDS. Dense MDS
#: holds the (n, n) float64 matrix read from the store and its working copies (a validated
#: float64 copy, float32 and float64 device copies, SMACOF's work matrices): measured peak
#: 33 bytes per entry on the CPU (n = 3,000, dimensions 1-3), so 13 GB at n = 20,000 --
#: what a 24 GB box holds next to its workers -- and 30 GB at n = 30,000, which it does not.
DENSE_LIMIT = 20_000
#: Landmarks of landmark MDS by default (see :func:`embed`).
DEFAULT_LANDMARKS = 1000

# --------------------------------------------------------------------------- embedding


def _extend_embedding(previous: np.ndarray, D: np.ndarray, n_neighbors: int = 5) -> np.ndarray:
    """Previous positions for the old points; new points at the mean of their nearest old ones."""
    n0, n = len(previous), len(D)
    if n0 >= n:
        return previous[:n].copy()
    k = min(n_neighbors, n0)
    near = np.argsort(D[n0:, :n0], axis=1, kind="stable")[:, :k]
    return np.concatenate([previous, previous[near].mean(axis=1)])


def _align(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate/reflect the centred ``X`` onto ``reference`` (its first rows); stress unchanged."""
    from scipy.linalg import orthogonal_procrustes

    X = X - X.mean(axis=0)
    n0 = len(reference)
    A = X[:n0] - X[:n0].mean(axis=0)
    B = reference - reference.mean(axis=0)
    if not A.any() or not B.any():
        return X
    R, _ = orthogonal_procrustes(A, B)
    return X @ R


def _embed_dense(
    store: Store,
    lv: DistanceLevel,
    dims: list[int],
    *,
    init_from_previous: bool,
    n_init: int,
    max_iter: int,
    eps: float,
    random_state: int | None,
    device: str | None,
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, str]]:
    """Metric MDS of the whole matrix, held in memory: (embeddings, stresses, starts)."""
    from microscale.metric_mds import mds_with_info

    n = lv.n(store)
    D = read_rows(store, lv.matrix)
    fit = mds_with_info(
        D,
        dims,
        n_init=n_init,
        max_iter=max_iter,
        eps=eps,
        random_state=random_state,
        device=device,
    )
    fresh, infos = fit.embeddings, fit.info
    embeddings: dict[int, np.ndarray] = {}
    stresses: dict[int, float] = {}
    starts: dict[int, str] = {}
    for k in dims:
        X, sigma, start = fresh[k], infos[k].stress, "classical"
        previous = _previous_embedding(store, lv, k, n) if init_from_previous else None
        if previous is not None:
            X0 = _extend_embedding(previous, D)
            refit = mds_with_info(D, k, init=X0, max_iter=max_iter, eps=eps, device=device)
            Xp, info = refit.embeddings[k], refit.info[k]
            if info.stress <= sigma:
                X, sigma, start = Xp, info.stress, "previous"
            X = _align(X, previous)
        embeddings[k], stresses[k], starts[k] = X, float(sigma), start
    return embeddings, stresses, starts


def _previous_embedding(store: Store, lv: DistanceLevel, k: int, n: int) -> np.ndarray | None:
    """The stored ``k``-dimensional embedding of the first ``n0 <= n`` rows, if any."""
    name = lv.embedding(k)
    if not has_array(store, name):
        return None
    previous = read_array(store, name)
    return previous if previous.shape[1] == k and 0 < len(previous) <= n else None


def embedding_inputs(store: Store, lv: DistanceLevel, **options: Any) -> dict[str, Any]:
    """What an embedding of ``lv``'s matrix depends on, as stored with it.

    The number of rows, a digest of the matrix's completion records (it changes when any
    block is computed again: :meth:`microscale.store.Store.done_digest`) and the MDS
    options. An embedding stored with the same inputs is used as it is (see
    :func:`embed`).
    """
    return {"n": lv.n(store), "distances": store.done_digest(lv.stage), **options}


def _stored_embeddings(
    store: Store, lv: DistanceLevel, dims: list[int], inputs: dict[str, Any]
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, str]]:
    """The stored embeddings computed from exactly ``inputs``: (embeddings, stresses, starts)."""
    embeddings: dict[int, np.ndarray] = {}
    stresses: dict[int, float] = {}
    starts: dict[int, str] = {}
    for k in dims:
        name = lv.embedding(k)
        if not has_array(store, name):
            continue
        attrs = array_attrs(store, name)
        if attrs.get("inputs") != inputs:
            continue
        X = read_array(store, name)
        if X.shape != (inputs["n"], k):
            continue
        embeddings[k], stresses[k], starts[k] = X, float(attrs["stress"]), str(attrs["start"])
    return embeddings, stresses, starts


def _band_reader(store: Store, name: str) -> Callable[[int, int], np.ndarray]:
    """``rows(start, stop)`` of the (n, n) matrix ``name``, read into one reused band buffer.

    Each call's result is overwritten by the next call (see
    :func:`microscale.store.read_rows` on why a reused buffer).
    """
    n = array_shape(store, name)[0]
    buf = np.empty((min(array_chunks(store, name)[0], n), n))

    def rows(start: int, stop: int) -> np.ndarray:
        if stop - start > len(buf):
            return read_rows(store, name, start, stop)
        return read_rows(store, name, start, stop, out=buf[: stop - start])

    return rows


def _landmark_columns(store: Store, name: str, landmarks: np.ndarray) -> np.ndarray:
    """(n, m) distances from every row to the landmarks, read one row band at a time.

    A band is one row of chunks of the matrix, ``(b, n)``: memory ``(n m + b n) * 8``
    bytes, never the whole matrix.
    """
    n = array_shape(store, name)[0]
    rows = _band_reader(store, name)
    out = np.empty((n, len(landmarks)))
    for start, stop in row_ranges(n, array_chunks(store, name)[0]):
        out[start:stop] = rows(start, stop)[:, landmarks]
    return out


def _embed_landmark(
    store: Store,
    lv: DistanceLevel,
    dims: list[int],
    m: int,
    *,
    init_from_previous: bool,
    max_iter: int,
    eps: float,
    random_state: int | None,
    device: str | None,
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, str]]:
    """Landmark MDS, with the stress of the full matrix: (embeddings, stresses, starts)."""
    from microscale.landmark import choose_landmarks, landmark_mds
    from microscale.metric_mds import stresses_from_rows

    n = lv.n(store)
    name = lv.matrix
    band = array_chunks(store, name)[0]
    idx = choose_landmarks(n, m, random_state=random_state)
    D_rest = _landmark_columns(store, name, idx)
    D_landmarks = D_rest[idx]

    rows = _band_reader(store, name)
    embeddings: dict[int, np.ndarray] = {}
    starts: dict[int, str] = {}
    for k in dims:
        X = landmark_mds(
            D_landmarks,
            D_rest,
            k,
            landmarks=idx,
            max_iter=max_iter,
            eps=eps,
            random_state=random_state,
            device=device,
        )
        previous = _previous_embedding(store, lv, k, n) if init_from_previous else None
        if previous is not None:
            X = _align(X, previous)
        embeddings[k], starts[k] = X, "landmark"
    # one pass over the matrix for every dimension's stress
    values = stresses_from_rows(rows, [embeddings[k] for k in dims], batch_size=band)
    stresses = dict(zip(dims, values, strict=True))
    return embeddings, stresses, starts


def embed(
    root: Root,
    *,
    descriptor: str = "cnn",
    n_components: Iterable[int] | None = None,
    init_from_previous: bool = True,
    n_init: int = 1,
    max_iter: int = 300,
    eps: float = 1e-6,
    random_state: int | None = 0,
    device: str | None = None,
    save: bool = True,
    lock: bool = True,
    level: str = "image",
    landmarks: int | None = None,
    max_dense: int = DENSE_LIMIT,
    dims: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Metric MDS of the store's distance matrix, in each dimension of ``n_components``.

    Every block pair of the matrix must be done. Two methods:

    **Dense** (``n <= max_dense`` and ``landmarks`` None): reads the whole (n, n) matrix
    and runs :func:`microscale.metric_mds.mds` from classical MDS. When the store holds an
    embedding from an earlier run (``embeddings/<d>/d<k>``, over the first ``n0 <= n``
    images) and ``init_from_previous``, SMACOF is also run from that embedding, extended
    to the new images by placing each at the mean of its 5 nearest old images; the start
    with the lower stress is kept, and the result is rotated/reflected onto the previous
    embedding (orthogonal Procrustes on the old images; the stress is unchanged), so that
    maps of a growing archive stay comparable.

    **Nothing new, nothing recomputed.** Each stored embedding records its inputs
    (:func:`embedding_inputs`: the number of rows, a digest of the distance matrix's
    completion records, the method and its options). A dimension whose stored embedding
    has the same inputs is returned as it is, bit for bit, without reading the matrix
    (``unchanged`` in the result when every dimension was): a re-run with no new image
    leaves the map as it was, so the result of a later growth run does not depend on
    how many such re-runs came before it.

    **Landmark** (``n > max_dense``, or ``landmarks`` given): ``m`` landmarks are drawn
    at random (:func:`microscale.landmark.choose_landmarks`, seeded by
    ``random_state``), the (n, m) distances to them are read from the store one row band
    (one row of chunks, ``(block_size, n)``) at a time, and
    :func:`microscale.landmark.landmark_mds` embeds the landmarks by SMACOF and places
    every other point against them. Memory is ``O(n m + block_size n)``; the matrix is
    never held. The price of the approximation is reported: the stress is Kruskal's
    stress-1 of the **full** matrix, streamed in row bands by
    :func:`microscale.metric_mds.stresses_from_rows` (one pass over the matrix for all
    dimensions). With ``init_from_previous``, the result is rotated onto the stored
    embedding as above, but not started from it (there is no full-matrix SMACOF to
    start); ``n_init`` is not used.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    n_components : iterable of int, optional
        Embedding dimensions, each < n (and < the number of landmarks); default
        1 .. min(10, n - 1).
    init_from_previous : bool, optional
        Also start from the stored embedding (when there is one); landmark MDS only
        aligns to it.
    n_init, max_iter, eps, random_state, device
        Passed to :func:`microscale.metric_mds.mds` (dense) or
        :func:`microscale.landmark.landmark_mds` (landmark; ``random_state`` also picks
        the landmarks).
    save : bool, optional
        Store the embeddings (for the next run's start).
    lock : bool, optional
        Hold the store's run lock (default).
    level : {"image", "tile"}, optional
        Embed the images' matrix or the tiles'.
    landmarks : int, optional
        Use landmark MDS with this many landmarks (at most ``n``), whatever ``n``.
        Default: landmark MDS with :data:`DEFAULT_LANDMARKS` (1000) landmarks only when
        ``n > max_dense``. On a curved 3-D manifold of 3,000 points, 1000 random
        landmarks gave a full-matrix stress within 1 % of dense MDS in dimensions 2, 3
        and 10 (500: within 3 %).
    max_dense : int, optional
        Largest ``n`` embedded densely (default :data:`DENSE_LIMIT`, 20,000: the dense
        matrix and its working copies take about 33 bytes per entry, 13 GB).
    dims : iterable of int, optional
        The old name of ``n_components`` (a FutureWarning; removed in the next release).

    Returns
    -------
    dict
        ``descriptor``; ``level``; ``n_images``; ``image_ids`` and ``image_paths`` (n,)
        str; ``embeddings`` {k: (n, k) float64}; ``stress`` {k: Kruskal stress-1 of the
        full matrix}; ``start`` {k: "classical", "previous" or "landmark"}; ``method``
        ("dense" or "landmark"); ``n_landmarks`` (int, or None for dense); ``unchanged``
        (bool: every embedding was the stored one, not recomputed). Build the
        labelled result with :func:`microscale.results.build_dataset`.

    Raises
    ------
    IncompleteStageError
        If some block pairs of the distance matrix are not done.
    DamagedStoreError
        If blocks changed since they were recorded (size or modification time; their
        records are dropped: ``run_distances`` recomputes them, hashing every block).
    ValueError
        If the landmarks (at most ``n``: more are capped) are not more than every
        dimension.
    """
    dims = renamed(n_components, dims, new_name="n_components", old_name="dims", caller="embed")
    lv = distance_level(descriptor, level)
    max_dense = check_positive_int(max_dense, "max_dense")
    if landmarks is not None:
        landmarks = check_positive_int(landmarks, "landmarks")
    store = as_store(root)
    name = lv.matrix
    with locked(store, lock):
        n = lv.n(store)
        if not has_array(store, name) or array_shape(store, name) != (n, n):
            raise IncompleteStageError(
                f"The store {store.root} has no complete {name} for its {n} {level}s; run "
                f"run_distances(descriptor={descriptor!r}, level={level!r}) first."
            )
        require_done(
            store,
            plan_distance_blocks(store, descriptor=descriptor, level=level),
            lv.stage,
            f"run_distances(descriptor={descriptor!r}, level={level!r})",
        )
        require_intact(  # run_distances hashed every block; here size and time suffice
            store,
            lv.stage,
            None,
            how=f"run_distances(descriptor={descriptor!r}, level={level!r})",
            full=False,
        )
        dims = list(range(1, min(10, n - 1) + 1)) if dims is None else [int(k) for k in dims]
        options = {
            "init_from_previous": init_from_previous,
            "max_iter": max_iter,
            "eps": eps,
            "random_state": random_state,
            "device": device,
        }
        m: int | None = None
        if landmarks is None and n <= max_dense:
            method = "dense"
        else:
            method = "landmark"
            # a scheduled run asks for its landmarks before the archive has grown to them
            m = min(DEFAULT_LANDMARKS if landmarks is None else landmarks, n)
            if dims and max(dims) >= m:
                raise ValueError(
                    f"Landmark MDS embeds in fewer dimensions than it has landmarks; got "
                    f"dims up to {max(dims)} with {m} landmarks. Pass more landmarks or "
                    "fewer dimensions."
                )
        inputs = embedding_inputs(
            store,
            lv,
            method=method,
            n_landmarks=m,
            n_init=n_init if method == "dense" else None,
            **{k: v for k, v in options.items() if k != "device"},
        )
        embeddings, stresses, starts = _stored_embeddings(store, lv, dims, inputs)
        todo = [k for k in dims if k not in embeddings]
        if todo and method == "dense":
            found = _embed_dense(store, lv, todo, n_init=n_init, **options)
        elif todo:
            found = _embed_landmark(store, lv, todo, m, **options)
        else:
            found = ({}, {}, {})
        for into, new in zip((embeddings, stresses, starts), found, strict=True):
            into.update(new)
        if save:
            for k in todo:
                write_array(
                    store,
                    lv.embedding(k),
                    embeddings[k],
                    attrs={
                        "n_images": n,
                        "stress": stresses[k],
                        "start": starts[k],
                        "method": method,
                        "n_landmarks": m,
                        "inputs": inputs,
                    },
                )
        table = image_table(store)
        ids, paths = table["image_id"], table["image_path"]
        if level == "tile":  # one row per tile: "<image path>@<row>,<col>"
            tiles = tile_table(store)
            img, origin = tiles["tile_image"], tiles["tile_origin"]
            ids = np.array([f"{ids[i]}@{r},{c}" for i, (r, c) in zip(img, origin, strict=True)])
            paths = np.array([str(paths[i]) for i in img])
    return {
        "descriptor": descriptor,
        "level": level,
        "n_images": n,
        "image_ids": ids,
        "image_paths": paths,
        "embeddings": embeddings,
        "stress": stresses,
        "start": starts,
        "method": method,
        "n_landmarks": m,
        "unchanged": not todo,
    }
