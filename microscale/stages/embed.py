"""Stage 4, embedding: metric MDS of a store's distance matrix, the final reduction.

:func:`embed` runs in one process: dense MDS of the whole matrix up to
:data:`DENSE_LIMIT` rows, beyond that landmark MDS that reads the matrix in row bands and
reports the stress of the full matrix. In the ``"landmarks"`` distance mode (the default
above ``max_dense`` rows, :func:`microscale.stages.distances.distance_mode`) there is no
matrix: landmark MDS reads the stored (n, m) landmark distances, and the stress is
estimated from a sample of pairs, with its confidence interval
(:func:`microscale.quality.sampled_stress`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from microscale._validation import check_positive_int, renamed
from microscale.errors import IncompleteStageError
from microscale.quality import DEFAULT_STRESS_SAMPLE
from microscale.stages._runner import (
    Root,
    as_store,
    locked,
    require_done,
    require_intact,
    row_ranges,
)
from microscale.stages.distances import (
    MAX_DENSE,
    DistanceLevel,
    distance_level,
    distance_mode,
    plan_distance_blocks,
)
from microscale.stages.landmarks import DEFAULT_LANDMARKS, plan_landmark_blocks
from microscale.store import (
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    has_array,
    image_table,
    read_array,
    read_row_selection,
    read_rows,
    tile_table,
    write_array,
)

__all__ = ["DEFAULT_LANDMARKS", "DEFAULT_STRESS_SAMPLE", "DENSE_LIMIT", "embed", "embedding_inputs"]

_log = logging.getLogger(__name__)

#: Most rows :func:`embed` gives to dense MDS; larger maps use landmark MDS. Dense MDS
#: holds the (n, n) float64 matrix read from the store and its working copies (a validated
#: float64 copy, float32 and float64 device copies, SMACOF's work matrices): measured peak
#: 33 bytes per entry on the CPU (n = 3,000, dimensions 1-3), so 3.3 GB at n = 10,000,
#: 7.4 GB at 15,000 (a budget of 8 GB per process) and 13 GB at 20,000. The same limit
#: (:data:`microscale.stages.distances.MAX_DENSE`) switches the distance stage to its
#: ``"landmarks"`` mode.
DENSE_LIMIT = MAX_DENSE

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


def _embed_on_landmarks(
    store: Store,
    lv: DistanceLevel,
    dims: list[int],
    *,
    init_from_previous: bool,
    max_iter: int,
    eps: float,
    random_state: int | None,
    device: str | None,
    stress_sample: int,
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, str], dict[str, Any]]:
    """Landmark MDS from the stored (n, m) columns; the stress from a sample of pairs."""
    from microscale.distance import pairwise_distances
    from microscale.landmark import landmark_mds
    from microscale.quality import sample_points, sampled_stress

    n = lv.n(store)
    idx = read_array(store, lv.landmarks).astype(np.int64)
    cols = read_rows(store, lv.landmark_matrix)  # (n, m): 0.8 GB at n = 10^5, m = 1000
    D_landmarks = cols[idx]
    D_landmarks = (D_landmarks + D_landmarks.T) / 2  # each entry came from its row's block
    np.fill_diagonal(D_landmarks, 0.0)
    embeddings: dict[int, np.ndarray] = {}
    starts: dict[int, str] = {}
    for k in dims:
        X = landmark_mds(
            D_landmarks, cols, k, landmarks=idx, max_iter=max_iter, eps=eps,
            random_state=random_state, device=device,
        )  # fmt: skip
        previous = _previous_embedding(store, lv, k, n) if init_from_previous else None
        if previous is not None:
            X = _align(X, previous)
        embeddings[k], starts[k] = X, "landmark"
    del cols
    sample = sample_points(n, stress_sample, random_state=random_state)
    D_sample = pairwise_distances(read_row_selection(store, lv.rows, sample), device=device)
    estimates = sampled_stress(D_sample, [embeddings[k][sample] for k in dims])
    stresses = {k: e.stress for k, e in zip(dims, estimates, strict=True)}
    quality = {
        "stress_interval": {k: (e.low, e.high) for k, e in zip(dims, estimates, strict=True)},
        "stress_pairs": estimates[0].n_pairs if estimates else 0,
        "stress_confidence": estimates[0].confidence if estimates else None,
    }
    return embeddings, stresses, starts, quality


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
    distances: str | None = None,
    stress_sample: int = DEFAULT_STRESS_SAMPLE,
) -> dict[str, Any]:
    """Metric MDS of the store's distance matrix, in each dimension of ``n_components``.

    In the ``"full"`` distance mode (``distances="full"``, or None and either ``n <=
    max_dense`` or a complete (n, n) matrix in the store) every block pair of the matrix
    must be done, and there are two methods (below). In the ``"landmarks"`` mode
    (``distances="landmarks"``, or None, ``n > max_dense`` and no complete matrix) there
    is no matrix: the landmark distances
    (:func:`microscale.stages.landmarks.run_landmark_distances`) must be done, landmark MDS
    embeds the store's landmarks and places every other row against them (``landmarks``
    is then the stage's business: the store's own landmarks are used), and the stress is
    **estimated**: ``stress_sample`` rows are drawn at random (seeded by
    ``random_state``), the exact distances among them computed with the distance kernel,
    and :func:`microscale.quality.sampled_stress` gives Kruskal's stress-1 over their
    pairs with a 95 % confidence interval (``stress_interval``).

    The two methods of the full mode:

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
        Largest ``n`` embedded densely (default :data:`DENSE_LIMIT`, 10,000: the dense
        matrix and its working copies take about 33 bytes per entry, 13 GB).
    dims : iterable of int, optional
        The old name of ``n_components`` (a FutureWarning; removed in the next release).
    distances : {"full", "landmarks"}, optional
        The distance mode the store was computed in; default by size (``max_dense``).
    stress_sample : int, optional
        Rows sampled for the stress estimate of the landmarks mode (default 2000:
        about 2 million pairs).

    Returns
    -------
    dict
        ``descriptor``; ``level``; ``n_images``; ``image_ids`` and ``image_paths`` (n,)
        str; ``embeddings`` {k: (n, k) float64}; ``stress`` {k: Kruskal stress-1 of the
        full matrix, or its estimate}; ``start`` {k: "classical", "previous" or
        "landmark"}; ``method`` ("dense" or "landmark"); ``n_landmarks`` (int, or None for
        dense); ``distances`` ("full" or "landmarks"); ``stress_method`` ("exact" or
        "sampled"); with "sampled", ``stress_interval`` {k: (low, high)},
        ``stress_pairs`` and ``stress_confidence``; ``unchanged`` (bool: every embedding
        was the stored one, not recomputed). Build the labelled result with
        :func:`microscale.results.build_dataset`.

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
    stress_sample = check_positive_int(stress_sample, "stress_sample")
    with locked(store, lock):
        n = lv.n(store)
        mode = distance_mode(n, distances, max_dense=max_dense)
        if distances is None and mode == "landmarks" and _complete_matrix(store, lv, n):
            mode = "full"  # the distance stage was asked for the full matrix: use it
        if mode == "landmarks":
            return _embed_landmarks_mode(
                store, lv, n, dims, save=save, level=level, stress_sample=stress_sample,
                init_from_previous=init_from_previous, max_iter=max_iter, eps=eps,
                random_state=random_state, device=device,
            )  # fmt: skip
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
            _save(store, lv, todo, embeddings, stresses, starts, n=n, method=method, m=m,
                  extra={k: {"inputs": inputs} for k in todo})  # fmt: skip
        ids, paths = _labels(store, level)
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
        "distances": "full",
        "stress_method": "exact",
    }


def _save(store: Store, lv: DistanceLevel, dims: list[int], embeddings: dict, stresses: dict,
          starts: dict, *, n: int, method: str, m: int | None,
          extra: dict[int, dict] | None = None) -> None:  # fmt: skip
    for k in dims:
        attrs = {"n_images": n, "stress": stresses[k], "start": starts[k], "method": method,
                 "n_landmarks": m, **(extra or {}).get(k, {})}  # fmt: skip
        write_array(store, lv.embedding(k), embeddings[k], attrs=attrs)


def _labels(store: Store, level: str) -> tuple[np.ndarray, np.ndarray]:
    table = image_table(store)
    ids, paths = table["image_id"], table["image_path"]
    if level == "tile":  # one row per tile: "<image path>@<row>,<col>"
        tiles = tile_table(store)
        img, origin = tiles["tile_image"], tiles["tile_origin"]
        ids = np.array([f"{ids[i]}@{r},{c}" for i, (r, c) in zip(img, origin, strict=True)])
        paths = np.array([str(paths[i]) for i in img])
    return ids, paths


def _complete_matrix(store: Store, lv: DistanceLevel, n: int) -> bool:
    """Whether the store holds the whole (n, n) matrix, every block pair recorded."""
    if not has_array(store, lv.matrix) or array_shape(store, lv.matrix) != (n, n):
        return False
    return not plan_distance_blocks(store, descriptor=lv.descriptor, level=lv.level)


def _embed_landmarks_mode(
    store: Store,
    lv: DistanceLevel,
    n: int,
    dims: list[int] | None,
    *,
    save: bool,
    level: str,
    stress_sample: int,
    **options: Any,
) -> dict[str, Any]:
    """:func:`embed` in the ``"landmarks"`` distance mode (under the caller's lock)."""
    how = f"run_landmark_distances(descriptor={lv.descriptor!r}, level={level!r})"
    name = lv.landmark_matrix
    if not has_array(store, name) or array_shape(store, name)[0] != n:
        raise IncompleteStageError(
            f"The store {store.root} has no complete {name} for its {n} {level}s; run {how} "
            "first (the distance stage in the 'landmarks' mode)."
        )
    b = array_chunks(store, name)[0]
    require_done(
        store,
        plan_landmark_blocks(store, descriptor=lv.descriptor, block_size=b, level=level),
        lv.landmark_stage,
        how,
    )
    m = array_shape(store, name)[1]
    dims = list(range(1, min(10, n - 1) + 1)) if dims is None else [int(k) for k in dims]
    if dims and max(dims) >= m:
        raise ValueError(
            f"Landmark MDS embeds in fewer dimensions than it has landmarks; got dims up to "
            f"{max(dims)} with the store's {m} landmarks. Choose more landmarks (delete "
            f"{lv.landmarks!r}) or fewer dimensions."
        )
    embeddings, stresses, starts, quality = _embed_on_landmarks(
        store, lv, dims, stress_sample=stress_sample, **options
    )
    if save:
        extra = {
            k: {"stress_low": lo, "stress_high": hi, "stress_method": "sampled",
                "stress_pairs": quality["stress_pairs"], "distances": "landmarks"}
            for k, (lo, hi) in quality["stress_interval"].items()
        }  # fmt: skip
        _save(store, lv, dims, embeddings, stresses, starts, n=n, method="landmark", m=m,
              extra=extra)  # fmt: skip
    ids, paths = _labels(store, level)
    return {
        "descriptor": lv.descriptor,
        "level": level,
        "n_images": n,
        "image_ids": ids,
        "image_paths": paths,
        "embeddings": embeddings,
        "stress": stresses,
        "start": starts,
        "method": "landmark",
        "n_landmarks": m,
        "distances": "landmarks",
        "stress_method": "sampled",
        "unchanged": False,
        **quality,
    }
