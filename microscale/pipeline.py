"""The stages of an archive run, as library functions over a store (no Prefect here).

An archive run turns the tiles of a store (:mod:`microscale.store`) into texture maps:

1. **features** -- :func:`run_features`: texture vectors (``"cnn"``) or power spectra
   (``"ps"``) of every tile, one task per feature batch (= one chunk of
   ``features/<d>``), :func:`compute_feature_batch`; optionally texture vectors are
   stored only as seeded random projections of a few thousand dimensions
   (``sketch_dim``: ~100x less storage and distance cost), made on the workers;
2. **image features** -- :func:`image_features`: the pixel-weighted mean of each image's
   tile vectors (METHOD.md section 2: tiles and images share one space), one task per
   group of images, :func:`compute_image_features`;
3. **distances** -- :func:`run_distances`: the exact (n, n) distance matrix between image
   features, out of core, one task per group of block pairs ``(i, j)``, ``i <= j``,
   :func:`compute_distance_blocks`, each calling the kernel
   :func:`microscale.distance.block_sq_distances` and writing chunks ``(i, j)`` and
   ``(j, i)``;
4. **embedding** -- :func:`embed`: metric MDS of the whole matrix, a final reduction in
   one process; beyond :data:`DENSE_LIMIT` rows, landmark MDS that reads the matrix in
   row bands and reports the stress of the full matrix.

Every stage plans only missing work: a unit of work is done when the store holds a
completion record for it with the same extent (row ranges), written after its data (see
the store's module docstring). Re-running a stage after a crash computes exactly the
units without a record; re-running after images were appended computes the new units and
the partial last ones whose extent grew. ``plan_*`` functions list that work,
``compute_*`` functions do one unit (plain picklable functions taking the store's path:
they run on Dask workers, which open the store themselves), and ``run_*`` functions plan,
submit the units to a Dask client (``client.map``; coarse tasks) or run them one after the
other when ``client`` is None, and report progress through ``on_done(done, total)``.

The ``run_*`` functions and :func:`embed` create and resize arrays, so they hold the
store's run lock (:meth:`microscale.store.Store.lock`, re-entrant in one process) unless
``lock=False``; the ``compute_*`` functions never take it.

Faults
------
A unit's data are written before its record, and Zarr writes each chunk by renaming a
temporary file, so whatever kills a run (the driver or a worker killed, a full disk) leaves
only whole chunks and records of written work: re-running the stage computes the rest. On
a Dask client, a killed worker's tasks are rescheduled by Dask; a unit that kills every
worker that runs it (``distributed.scheduler.allowed-failures``) is given up while the
others run on, and the stage then raises :class:`FailedUnitsError` naming it. A cluster
that has no workers for :data:`WORKER_TIMEOUT` seconds raises :class:`NoWorkersError`
rather than waiting forever. Transient read errors of a network file system are retried
by the store (:mod:`microscale.store`).

Constant tiles
--------------
Tiles are stored normalised with their whole image, so a flat tile (a saturated or empty
region) is a valid part of a textured image: with ``normalize=None`` (the default) its
texture vector is computed like any other. A descriptor that rescales each tile on its own
cannot describe it (the power spectrum's min/max rescaling, or ``"cnn"`` with a
``normalize`` mapping): its feature row is left NaN and it is left out of its image's
mean. An image with no describable tile is an error.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microscale import scratch
from microscale.errors import FailedUnitsError, NoWorkersError
from microscale.store import (
    IncompleteStageError,
    Store,
    StoreError,
    array_attrs,
    array_chunks,
    array_shape,
    ensure_array,
    ensure_distance_matrix,
    ensure_features_array,
    has_array,
    image_table,
    open_store,
    read_array,
    read_rows,
    read_tiles,
    tile_table,
    write_array,
    write_block,
)

__all__ = [
    "AUTO_BLOCK_SIZES",
    "BLOCK_MEMORY_FRACTION",
    "DEFAULT_LANDMARKS",
    "DENSE_LIMIT",
    "DESCRIPTORS",
    "SKETCH_BLOCK",
    "SKETCHED_DESCRIPTORS",
    "Batch",
    "BlockPair",
    "FailedUnitsError",
    "NoWorkersError",
    "StageCounts",
    "WORKER_TIMEOUT",
    "auto_block_size",
    "compute_distance_block",
    "compute_distance_blocks",
    "compute_feature_batch",
    "compute_image_features",
    "distance_task_bytes",
    "embed",
    "image_features",
    "plan_distance_blocks",
    "plan_feature_batches",
    "plan_image_groups",
    "run_distances",
    "run_features",
]

_log = logging.getLogger(__name__)

#: Descriptors a store can hold: Gram texture vectors and power spectra.
DESCRIPTORS: tuple[str, ...] = ("cnn", "ps")
DEFAULT_WEIGHTS = "vgg19-normalized"
DEFAULT_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: Images per image-feature task (one row of ``image_feature_sums``).
DEFAULT_IMAGES_PER_TASK = 64
#: Largest chunk of ``image_features/<d>`` (bytes): a block read of the distance stage
#: opens one file per chunk. Measured reading 1024 full texture vectors from Zarr on the
#: dev VM, side by side: chunks of 1 row (1.2 MB) 3.3-3.6 GB/s, of 8 rows (9.8 MB)
#: 4.2-5.3 GB/s, of 64 rows (78 MB: past glibc's mmap threshold, fresh pages each time)
#: 2.3-2.5 GB/s; with a Dask worker's malloc settings 3.3-4.0, 3.2-3.7 and 2.4-2.7 GB/s.
#: So 8 rows: as fast or faster, and 8 times fewer files than one per image.
IMAGE_CHUNK_BYTES = 16 * 2**20
#: Block pairs per distance task (they share their row block, read once).
DEFAULT_PAIRS_PER_TASK = 4
#: Block sizes ``block_size=None`` chooses from, largest first: 1024 is the kernel's
#: measured optimum, and its rate falls with the block (67 / 63 / 53 % of the GEMM peak at
#: 1024 / 512 / 256 on the CPU; see microscale.distance).
AUTO_BLOCK_SIZES: tuple[int, ...] = (1024, 768, 512, 384, 256, 128, 64)
#: Share of a task slot's memory (a Dask worker's ``memory_limit / nthreads``, or the
#: available memory without a client) that ``block_size=None`` lets one distance task use:
#: Dask pauses a worker at 80 % and the rest of the process needs room too.
BLOCK_MEMORY_FRACTION = 0.5
#: Descriptors that ``sketch_dim`` applies to. Only the texture vectors (305,888 entries)
#: are sketched; the power spectrum is the paper's exact baseline and stays as it is.
SKETCHED_DESCRIPTORS: tuple[str, ...] = ("cnn",)
#: Rows of the implicit projection matrix drawn at a time by a sketch (the default of
#: :func:`microscale.sketch.sketch`); recorded with the sketch, as part of its identity.
SKETCH_BLOCK = 16384
#: Row blocks a distance task reads ahead, in a thread, while the kernel runs (0: none;
#: None: 1 when the kernel runs on a GPU, else 0). Each costs one more block in memory
#: (``b * d * s`` bytes). On a CPU the read competes with the GEMM for the same cores:
#: on 2 cores it made a task 1.3-1.6x slower (benchmarks/bench_distances.py).
READ_AHEAD: int | None = None
_BUFFER_WAIT_S = 600.0  # see _BlockReader._load
#: Most rows :func:`embed` gives to dense MDS; larger maps use landmark MDS. Dense MDS
#: holds the (n, n) float64 matrix read from the store and its working copies (a validated
#: float64 copy, float32 and float64 device copies, SMACOF's work matrices): measured peak
#: 33 bytes per entry on the CPU (n = 3,000, dimensions 1-3), so 13 GB at n = 20,000 --
#: what a 24 GB box holds next to its workers -- and 30 GB at n = 30,000, which it does not.
DENSE_LIMIT = 20_000
#: Landmarks of landmark MDS by default (see :func:`embed`).
DEFAULT_LANDMARKS = 1000

#: Seconds a stage waits for a Dask cluster without workers before giving up.
WORKER_TIMEOUT = 60.0
_POLL_S = 1.0  # how often a waiting driver checks that the cluster still has workers

Progress = Callable[[int, int], None]
Root = Store | str | os.PathLike[str]


# --------------------------------------------------------------------------- work units


@dataclass(frozen=True)
class Batch:
    """A range of rows computed by one task: a feature batch or a group of images.

    Attributes
    ----------
    index : int
        Chunk index (features) or group index (image features).
    start, stop : int
        The rows ``[start, stop)`` of tiles (features) or images.
    """

    index: int
    start: int
    stop: int

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return f"{self.index:09d}"

    @property
    def extent(self) -> dict[str, list[int]]:
        """What the record says was covered."""
        return {"rows": [self.start, self.stop]}


@dataclass(frozen=True)
class BlockPair:
    """Block pair ``(i, j)``, ``i <= j``, of the distance matrix.

    Attributes
    ----------
    i, j : int
        Row and column block indices.
    rows, cols : (start, stop)
        The images of block ``i`` and block ``j``.
    """

    i: int
    j: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return f"{self.i:06d}-{self.j:06d}"

    @property
    def extent(self) -> dict[str, list[int]]:
        """What the record says was covered."""
        return {"rows": list(self.rows), "cols": list(self.cols)}


@dataclass(frozen=True)
class StageCounts:
    """What a stage did.

    Attributes
    ----------
    computed : int
        Units of work computed now (batches, image groups or block pairs).
    skipped : int
        Units already done (a matching completion record), not recomputed.
    """

    computed: int
    skipped: int

    @property
    def total(self) -> int:
        """All units of the stage."""
        return self.computed + self.skipped


# --------------------------------------------------------------------------- helpers


def _store(root: Root) -> Store:
    return root if isinstance(root, Store) else open_store(root)


def _root(root: Root) -> Path:
    return root.root if isinstance(root, Store) else Path(root)


def _check_descriptor(descriptor: str) -> str:
    if descriptor not in DESCRIPTORS:
        raise ValueError(
            f"The 'descriptor' parameter must be one of {DESCRIPTORS}. Got {descriptor!r} instead."
        )
    return descriptor


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"The '{name}' parameter must be a positive int. Got {value!r} instead.")
    return int(value)


def _locked(store: Store, lock: bool) -> contextlib.AbstractContextManager[Any]:
    return store.lock() if lock else contextlib.nullcontext()


def _ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _apply(func: Callable[..., Any], root: Path, unit: Any, kwargs: dict[str, Any]) -> Any:
    return func(root, unit, **kwargs)


def _describe(unit: Any) -> str:
    if isinstance(unit, Batch):
        return f"{unit.key} (rows {unit.start}:{unit.stop})"
    if isinstance(unit, Sequence) and all(isinstance(p, BlockPair) for p in unit):
        return "block pairs " + ", ".join(p.key for p in unit)
    return repr(unit)


def _wait_for_workers(client: Any, timeout: float) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise NoWorkersError(_no_workers_message(client, timeout)) from None


def _no_workers_message(client: Any, timeout: float) -> str:
    return (
        f"The Dask cluster at {client.scheduler.address} has had no workers for {timeout:g} "
        "s, so the stage cannot run. Start workers for it (or check why they died: memory "
        "limit, GPU, the worker logs), or run without a client. The work done so far is kept."
    )


def _run_units(
    func: Callable[..., Any],
    root: Path,
    units: Sequence[Any],
    *,
    client: Any,
    on_done: Progress | None,
    sizes: Sequence[int] | None = None,
    **kwargs: Any,
) -> None:
    """Run ``func(root, unit, **kwargs)`` for every unit, here or on a Dask client.

    ``sizes`` (default 1 each) is how much each unit advances the progress count.
    On a task error the pending tasks are cancelled and the error is raised; the units
    already done keep their completion records.

    On a client, a worker that dies (killed, out of memory) is replaced by Dask and its
    tasks are rescheduled; a task that killed ``distributed.scheduler.allowed-failures +
    1`` workers is given up (``KilledWorker``). Such a unit does not stop the others: they
    run to the end and then :class:`FailedUnitsError` names the failed units. A cluster
    with no worker for :data:`WORKER_TIMEOUT` seconds, before or during the run, raises
    :class:`NoWorkersError` instead of waiting forever; a lost scheduler cancels the tasks
    at once (Dask's ``CancelledError``, with a note).
    """
    sizes = [1] * len(units) if sizes is None else list(sizes)
    total = sum(sizes)
    done = 0
    if on_done is not None:
        on_done(0, total)
    if client is None:
        for unit, size in zip(units, sizes, strict=True):
            func(root, unit, **kwargs)
            done += size
            if on_done is not None:
                on_done(done, total)
        return
    patience = float(WORKER_TIMEOUT)
    if units:
        _wait_for_workers(client, patience)
    # The options travel as one dict argument, not as map(**kwargs): Client.map has options
    # of its own (batch_size, key, retries ...) that would swallow ours. Futures inside the
    # dict (scattered weights) are resolved on the worker.
    run = functools.partial(
        _run_on_client, func, root, kwargs=kwargs, client=client, patience=patience,
        on_done=on_done, total=total,
    )  # fmt: skip
    failed, done = run(units, sizes, done=0)
    if failed:  # tasks queued on a worker that a poison task killed count as failures too:
        retry = [(u, z) for u, z in zip(units, sizes, strict=True) if _describe(u) in failed]
        failed = {}
        for unit, size in retry:  # so each gets a second chance, alone
            again, done = run([unit], [size], done=done)
            failed.update(again)
    if failed:
        detail = "; ".join(f"{unit}: {why}" for unit, why in failed.items())
        raise FailedUnitsError(
            f"{len(failed)} of {len(units)} task(s) of {func.__name__} killed every worker "
            f"that ran them and were given up: {detail}. The other tasks are done and "
            "recorded; re-run the stage to retry only these, and if they fail again look for "
            "what kills the workers (memory limit, a corrupt input) in the worker logs.",
            failed=failed,
        )


def _run_on_client(
    func: Callable[..., Any],
    root: Path,
    units: Sequence[Any],
    sizes: Sequence[int],
    *,
    kwargs: dict[str, Any],
    client: Any,
    patience: float,
    on_done: Progress | None,
    total: int,
    done: int,
) -> tuple[dict[str, str], int]:
    """Submit ``units``, wait for all; ({unit: reason} of those given up, progress count).

    Each future is released as soon as its result is read, so a worker that dies later does
    not make Dask recompute work that is already written and recorded.
    """
    import distributed
    from distributed.scheduler import KilledWorker

    n = len(units)
    keys = [f"{func.__name__}-{uuid.uuid4().hex}" for _ in range(n)]  # named in the dashboard
    pending = client.map(_apply, [func] * n, [root] * n, list(units), [kwargs] * n, key=keys)
    unit_of = {f.key: (u, s) for f, u, s in zip(pending, units, sizes, strict=True)}
    failed: dict[str, str] = {}
    idle_since: float | None = None
    try:
        while pending:
            try:
                finished, rest = distributed.wait(
                    pending, timeout=_POLL_S, return_when="FIRST_COMPLETED"
                )
            except TimeoutError:  # nothing finished: are there still workers?
                if client.nthreads():
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > patience:
                    raise NoWorkersError(_no_workers_message(client, patience)) from None
                continue
            idle_since = None
            pending = list(rest)
            for future in finished:
                unit, size = unit_of.pop(future.key)
                try:
                    future.result()
                except KilledWorker as exc:
                    failed[_describe(unit)] = str(exc)
                    _log.error(
                        "%s %s killed every worker that ran it: %s", func.__name__, unit, exc
                    )
                    continue
                finally:
                    future.release()
                done += size
                if on_done is not None:
                    on_done(done, total)
            del finished
    except BaseException as exc:
        client.cancel(pending)
        if isinstance(exc, CancelledError) and client.status != "running":
            exc.add_note(
                "microscale: the Dask scheduler is gone. The units done so far keep their "
                "completion records; re-run the stage with a new client to compute the rest."
            )
        raise
    return failed, done


# --------------------------------------------------------------------------- features


def _feature_spec(
    store: Store,
    descriptor: str,
    *,
    layers: Sequence[str],
    normalize: str | None,
    weights: Any,
    precision: str = "float32",
) -> tuple[int, np.dtype, dict[str, Any]]:
    """(n_features, dtype, identifying attrs) of ``features/<descriptor>``."""
    if descriptor == "cnn":
        from microscale.texture import check_precision, feature_slices, n_features

        # validated, in network order; the backbone decides (the random network has one)
        canonical = list(feature_slices(layers, weights=weights))
        attrs = {"descriptor": "cnn", "layers": canonical, "normalize": normalize}
        if check_precision(precision) != "float32":  # absent: float32 (older stores too)
            attrs["precision"] = precision
        return n_features(layers, weights=weights), _feature_dtype(descriptor), attrs
    s = store.tile_size
    return s * s, _feature_dtype(descriptor), {"descriptor": "ps", "tile_size": s}


def _feature_dtype(descriptor: str) -> np.dtype:
    """Texture vectors are float32 (as texture_vectors returns them), spectra float64."""
    return np.dtype(np.float32 if descriptor == "cnn" else np.float64)


def _weights_sha256(weights: Any) -> str:
    """The backbone's identity: its weights' sha256 (the random network's: its filters')."""
    from microscale.backbones import describe_backbone

    return describe_backbone(weights).sha256


def _features_chunk(store: Store, descriptor: str) -> int:
    name = f"features/{descriptor}"
    return array_chunks(store, name)[0] if has_array(store, name) else store.features_chunk


def _check_seed(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            f"The '{name}' parameter must be a non-negative int. Got {value!r} instead."
        )
    return int(value)


def _sketch_setting(
    descriptor: str, n_features: int, *, sketch_dim: int | None, sketch_seed: int
) -> dict[str, int] | None:
    """The ``"sketch"`` attribute of ``features/<descriptor>`` for a run, or None.

    A descriptor is sketched when ``sketch_dim`` is given, it is one of
    :data:`SKETCHED_DESCRIPTORS` and its vectors are longer than ``sketch_dim`` (a sketch
    as long as the vector would save nothing and only add noise).
    """
    seed = _check_seed(sketch_seed, "sketch_seed")
    if sketch_dim is None:
        return None
    k = _check_positive(sketch_dim, "sketch_dim")
    if descriptor not in SKETCHED_DESCRIPTORS or n_features <= k:
        return None
    return {"n_components": k, "seed": seed, "input_dim": int(n_features), "block": SKETCH_BLOCK}


def _sketch_words(setting: dict[str, Any] | None) -> str:
    if setting is None:
        return "full vectors (no sketch)"
    return (
        f"sketches of {setting.get('input_dim')}-long vectors to {setting.get('n_components')} "
        f"dimensions (seed {setting.get('seed')}, block {setting.get('block')})"
    )


def _check_sketch(store: Store, name: str, setting: dict[str, int] | None) -> None:
    """Refuse to mix sketch settings in one array: their vectors are not comparable."""
    if not has_array(store, name):
        return
    stored = array_attrs(store, name).get("sketch")
    if stored == setting:
        return
    same = (
        "sketch_dim=None"
        if stored is None
        else f"sketch_dim={stored.get('n_components')}, sketch_seed={stored.get('seed')}"
    )
    raise StoreError(
        f"{name!r} in the store {store.root} holds {_sketch_words(stored)}, but this run asks "
        f"for {_sketch_words(setting)}. Vectors of different sketches cannot be compared: "
        f"run again with the stored setting ({same}), or write this one to a new store."
    )


def _check_texture_precision(store: Store, name: str, precision: str) -> None:
    """Refuse to mix float32 and bfloat16 texture vectors in one array.

    The attribute is written only for ``"bfloat16"``: stores made before the option hold
    float32 vectors and have none.
    """
    if not has_array(store, name):
        return
    stored = array_attrs(store, name).get("precision", "float32")
    if stored != precision:
        raise StoreError(
            f"{name!r} in the store {store.root} holds texture vectors computed in {stored}, "
            f"but this run asks for {precision}; their distances differ by up to a few per "
            f"cent. Run again with precision={stored!r} (--texture-precision {stored}), or "
            "write this one to a new store."
        )


def _sketch_rows(vectors: np.ndarray, setting: dict[str, int], device: str | None) -> np.ndarray:
    from microscale.sketch import sketch

    return sketch(
        vectors,
        n_components=setting["n_components"],
        seed=setting["seed"],
        block=setting["block"],
        device=device,
    )


def plan_feature_batches(store: Root, *, descriptor: str = "cnn") -> list[Batch]:
    """Feature batches without a matching completion record.

    A batch is one chunk of ``features/<descriptor>``: tiles
    ``[k * c, min((k + 1) * c, n_tiles))`` with ``c`` the chunk length. The last batch is
    stale when tiles were appended since it was done; it is then completed: its earlier
    rows are kept and only the new tiles are computed.

    Parameters
    ----------
    store : Store or path
    descriptor : {"cnn", "ps"}

    Returns
    -------
    list of Batch
        In tile order.
    """
    store = _store(store)
    descriptor = _check_descriptor(descriptor)
    stage = f"features.{descriptor}"
    c = _features_chunk(store, descriptor)
    batches = [Batch(k, a, b) for k, (a, b) in enumerate(_ranges(store.n_tiles, c))]
    return [b for b in batches if not store.is_done(stage, b.key, b.extent)]


def _with_oom_retry(
    compute: Callable[[int], np.ndarray], batch_size: int, oom_hook: Callable[[int], None] | None
) -> np.ndarray:
    """Run ``compute(batch_size)``, halving the batch size on ``torch.OutOfMemoryError``."""
    import torch

    size = batch_size
    while True:
        try:
            if oom_hook is not None:
                oom_hook(size)
            return compute(size)
        except torch.OutOfMemoryError as exc:
            if size == 1:
                exc.add_note(
                    "microscale: one tile per forward pass does not fit in device memory; "
                    "use smaller tiles or a device with more memory."
                )
                raise
            failed = size
        # Outside the except clause: the traceback (and the tensors it holds) is released.
        size = max(1, failed // 2)
        _log.warning("Out of device memory at batch_size=%d; retrying with %d", failed, size)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def compute_feature_batch(
    root: Root,
    batch: Batch,
    *,
    descriptor: str = "cnn",
    weights: Any = DEFAULT_WEIGHTS,
    layers: Sequence[str] = DEFAULT_LAYERS,
    normalize: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    oom_hook: Callable[[int], None] | None = None,
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
    precision: str = "float32",
) -> Batch:
    """Compute one feature batch, write its chunk of ``features/<descriptor>``, mark it done.

    Runs on a Dask worker (or in the driver): it opens the store from ``root``, reads the
    batch's tiles, computes their descriptors, sketches them (when asked: only the sketch
    is written, the full vectors never leave the worker), writes the whole chunk, and then
    writes the completion record. The driver (:func:`run_features`) must have created the
    array.

    Parameters
    ----------
    root : path or Store
        The store.
    batch : Batch
        From :func:`plan_feature_batches`.
    descriptor : {"cnn", "ps"}, optional
        ``"cnn"``: :func:`microscale.texture.texture_vectors`, (t, n_features(layers))
        float32. ``"ps"``: :func:`microscale.spectrum.power_spectra`, (t, s * s) float64
        (each tile min/max-rescaled to [-1, 1], as the function does per image).
    weights : str, Path or VGGWeights, optional
        The VGG-19 weights (``"cnn"`` only). A name or path is loaded once per worker
        process and cached.
    layers : sequence of str, optional
        VGG-19 layers of the texture vector (``"cnn"`` only).
    normalize : {"minmax", "percentile", "dtype"} or None, optional
        Intensity mapping of each tile before the network (``"cnn"`` only). None (the
        default): the tiles are used as stored, which must be in [0, 1] (the ingest stage
        normalises each image before tiling it).
    device : str, optional
        Torch device; default the worker's GPU when it has one.
    batch_size : int, optional
        Tiles per forward pass. On ``torch.OutOfMemoryError`` it is halved and the batch
        recomputed (down to 1); the result is the same.
    oom_hook : callable, optional
        Called with the forward batch size before each attempt; it may raise
        ``torch.OutOfMemoryError`` (used by tests to simulate a small GPU on a CPU).
    sketch_dim : int, optional
        Store ``sketch_dim``-long sketches of the texture vectors instead of the vectors
        (:func:`microscale.sketch.sketch`, on ``device``); see :func:`run_features`.
    sketch_seed : int, optional
        Seed of the sketch's projection.
    precision : {"float32", "bfloat16"}, optional
        Of the texture vectors (``"cnn"`` only): :func:`microscale.texture.texture_vectors`.

    Returns
    -------
    Batch
        ``batch``, once written and recorded.
    """
    descriptor = _check_descriptor(descriptor)
    batch_size = _check_positive(batch_size, "batch_size")
    store = _store(root)
    name = f"features/{descriptor}"
    d, dtype, spec = _feature_spec(
        store, descriptor, layers=layers, normalize=normalize, weights=weights,
        precision=precision,
    )  # fmt: skip
    if descriptor == "cnn":
        _check_texture_precision(store, name, precision)
    setting = _sketch_setting(descriptor, d, sketch_dim=sketch_dim, sketch_seed=sketch_seed)
    spec["sketch"] = setting
    width = d if setting is None else setting["n_components"]
    stored = array_attrs(store, name)
    for key, value in spec.items():
        if stored.get(key) != value:
            raise StoreError(
                f"{name!r} holds features with {key}={stored.get(key)!r}, but this batch was "
                f"asked for {key}={value!r}; pass the settings the array was created with."
            )
    # A chunk that grew (the archive's last, partial batch gained tiles) keeps the rows
    # its earlier record covers: only the new tiles are computed, the task still writes
    # the whole chunk.
    stage = f"features.{descriptor}"
    previous = store.done_keys(stage).get(batch.key) or {}
    old_rows = previous.get("rows", [batch.start, batch.start])
    kept = old_rows[1] - batch.start if old_rows[0] == batch.start else 0
    kept = kept if 0 < kept < batch.stop - batch.start else 0
    tiles = read_tiles(store, batch.start + kept, batch.stop)
    if descriptor == "cnn" and normalize is None:
        textured = np.ones(len(tiles), dtype=bool)  # flat tiles have a finite vector
    else:
        flat = tiles.reshape(len(tiles), -1)
        textured = flat.min(axis=1) < flat.max(axis=1)
    out = np.full((len(tiles), width), np.nan, dtype=dtype)
    if not textured.all():
        _log.info(
            "%d constant tile(s) in tiles %d:%d cannot be rescaled; their rows stay NaN",
            int((~textured).sum()),
            batch.start,
            batch.stop,
        )
    if textured.any():
        x = tiles[textured]
        if descriptor == "cnn":
            from microscale.texture import texture_vectors

            def compute(size: int) -> np.ndarray:
                return texture_vectors(
                    x,
                    weights=weights,
                    layers=layers,
                    normalize=normalize,
                    device=device,
                    batch_size=size,
                    precision=precision,
                )

            vectors = _with_oom_retry(compute, batch_size, oom_hook)
        else:
            from microscale.spectrum import power_spectra

            vectors = power_spectra(x, dtype=np.float64)
        if setting is not None:
            vectors = _sketch_rows(vectors, setting, device)
        out[textured] = vectors
    if kept:
        out = np.concatenate([read_rows(store, name, batch.start, batch.start + kept), out])
    write_block(store, name, out, rows=(batch.start, batch.stop))
    store.mark_done(stage, batch.key, batch.extent)
    return batch


def run_features(
    root: Root,
    *,
    descriptor: str = "cnn",
    client: Any = None,
    weights: Any = DEFAULT_WEIGHTS,
    layers: Sequence[str] = DEFAULT_LAYERS,
    normalize: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    on_done: Progress | None = None,
    lock: bool = True,
    oom_hook: Callable[[int], None] | None = None,
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
    precision: str = "float32",
) -> StageCounts:
    """Compute the missing feature batches of every committed tile.

    Creates or grows ``features/<descriptor>`` (its attributes record the descriptor's
    settings and, for ``"cnn"``, the weights' sha256; a store computed with other
    settings is refused), plans the batches without a matching completion record, and
    runs :func:`compute_feature_batch` for each, one Dask task per batch.

    With ``sketch_dim = k`` (a *sketch*), each worker projects its batch's texture vectors to ``k``
    dimensions (:func:`microscale.sketch.sketch`, a seeded Gaussian random projection)
    before writing, so ``features/cnn`` is ``(n_tiles, k)`` float32 and the full vectors
    are never stored: at ``k = 2048`` storage and distance cost drop ``305,888 / 2048``
    (~150x), and each distance changes by a relative error of about ``1 / sqrt(2 k)``
    (1.6 %; see :mod:`microscale.sketch`). The array's ``"sketch"`` attribute is
    ``{"n_components": k, "seed": sketch_seed, "input_dim": d, "block": SKETCH_BLOCK}``
    (None when not sketched): a query vector sketched with exactly these values is
    comparable with the stored ones. Image features inherit it (the pixel-weighted mean
    of sketches is the sketch of the mean: the projection is linear), and distances and
    embeddings work on the sketches unchanged.

    Only the descriptors of :data:`SKETCHED_DESCRIPTORS` (``"cnn"``) are sketched, and
    only when their vectors are longer than ``k``; the power spectrum, the paper's exact
    baseline, is always stored as it is. A sketch setting is fixed when the array is
    created: running again with another one raises :class:`StoreError`.

    Cost: the projection matrix is generated on the CPU (numpy's generator, so it is the
    same on every worker and device): about 4.6 s per 1024 components at
    ``d = 305,888``. Each worker keeps it in memory for the next batches when it fits
    :data:`microscale.sketch.CACHE_BYTES` (2.5 GB at ``k = 2048``); otherwise it is
    regenerated for every batch, and large feature batches (``features_chunk`` of the
    store) amortise it.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    client : distributed.Client, optional
        Run the batches on this client (see :mod:`microscale.cluster`); None runs them
        here, one after the other. Loaded ``VGGWeights`` are scattered to the workers once.
    weights, layers, normalize, device, batch_size, oom_hook
        As in :func:`compute_feature_batch`.
    on_done : callable, optional
        ``on_done(done, total)`` after each batch (and once with ``done = 0``).
    lock : bool, optional
        Hold the store's run lock (default).
    sketch_dim : int, optional
        Store sketches of this length instead of the texture vectors (see above);
        None (the default) stores the full vectors. A few thousand: 2048 is a good start.
    sketch_seed : int, optional
        Seed of the sketch's projection (default 0).
    precision : {"float32", "bfloat16"}, optional
        Of the texture vectors: ``"bfloat16"`` runs the convolutions in bfloat16 (2.2x
        faster on a CPU with AVX-512 BF16; distances off by ~0.5 % of the median
        distance, see :mod:`microscale.texture`). Recorded as the array's
        ``"precision"`` attribute (absent for float32) and fixed per store.

    Returns
    -------
    StageCounts
        Batches computed and batches skipped as done.

    Raises
    ------
    StoreError
        If the store holds this descriptor computed with other settings (layers,
        weights, sketch, precision).
    """
    descriptor = _check_descriptor(descriptor)
    store = _store(root)
    with _locked(store, lock):
        d, dtype, attrs = _feature_spec(
            store, descriptor, layers=layers, normalize=normalize, weights=weights,
            precision=precision,
        )  # fmt: skip
        name = f"features/{descriptor}"
        if descriptor == "cnn":
            attrs["weights_sha256"] = _weights_sha256(weights)
            _check_texture_precision(store, name, precision)
        setting = _sketch_setting(descriptor, d, sketch_dim=sketch_dim, sketch_seed=sketch_seed)
        if setting is None and sketch_dim is not None and descriptor in SKETCHED_DESCRIPTORS:
            _log.info("%r vectors have %d entries, not more than sketch_dim=%s: stored whole",
                      descriptor, d, sketch_dim)  # fmt: skip
        _check_sketch(store, name, setting)
        attrs["sketch"] = setting
        created = ensure_features_array(
            store,
            name,
            d if setting is None else setting["n_components"],
            n_rows=store.n_tiles,
            chunk_rows=_features_chunk(store, descriptor),
            dtype=dtype,
            attrs=attrs,
        )
        if created:
            store.clear_done(f"features.{descriptor}")  # records of a deleted array
        todo = plan_feature_batches(store, descriptor=descriptor)
        n_all = len(_ranges(store.n_tiles, _features_chunk(store, descriptor)))
        kwargs: dict[str, Any] = {"descriptor": descriptor, "oom_hook": oom_hook}
        if setting is not None:
            kwargs.update(sketch_dim=setting["n_components"], sketch_seed=setting["seed"])
        if descriptor == "cnn":
            from microscale.weights import VGGWeights

            if client is not None and isinstance(weights, VGGWeights) and todo:
                weights = client.scatter(weights, broadcast=True)
            kwargs.update(
                weights=weights,
                layers=tuple(layers),
                normalize=normalize,
                device=device,
                batch_size=batch_size,
                precision=precision,
            )
        _run_units(
            compute_feature_batch, _root(root), todo, client=client, on_done=on_done, **kwargs
        )
        return StageCounts(computed=len(todo), skipped=n_all - len(todo))


# --------------------------------------------------------------------------- image features


def _image_chunk_rows(row_bytes: int, group: int) -> int:
    """The largest divisor of ``group`` whose chunk of rows fits :data:`IMAGE_CHUNK_BYTES`."""
    fits = max(1, IMAGE_CHUNK_BYTES // max(1, row_bytes))
    return max(c for c in range(1, group + 1) if group % c == 0 and c <= fits)


def _group_size(store: Store, descriptor: str, images_per_task: int | None) -> int:
    name = f"image_feature_sums/{descriptor}"
    if has_array(store, name):
        stored = int(array_attrs(store, name)["images_per_group"])
        if images_per_task is not None and images_per_task != stored:
            raise StoreError(
                f"{name!r} groups {stored} images per task; pass images_per_task={stored} "
                "(or None)."
            )
        return stored
    if images_per_task is None:
        return DEFAULT_IMAGES_PER_TASK
    return _check_positive(images_per_task, "images_per_task")


def _require_features(store: Store, descriptor: str) -> None:
    """Raise unless every feature batch of ``descriptor`` is done."""
    _require(
        store,
        plan_feature_batches(store, descriptor=descriptor),
        f"features.{descriptor}",
        f"run_features(descriptor={descriptor!r})",
    )
    if not has_array(store, f"features/{descriptor}"):
        raise IncompleteStageError(
            f"The store {store.root} has no features/{descriptor}; run run_features first."
        )


def plan_image_groups(
    store: Root, *, descriptor: str = "cnn", images_per_task: int | None = None
) -> list[Batch]:
    """Groups of images whose image features are missing or stale.

    Group ``g`` is images ``[g * G, min((g + 1) * G, n_images))``; ``G`` is fixed when the
    stage first runs (``images_per_task``, default 64).
    """
    store = _store(store)
    descriptor = _check_descriptor(descriptor)
    size = _group_size(store, descriptor, images_per_task)
    stage = f"image_features.{descriptor}"
    groups = [Batch(g, a, b) for g, (a, b) in enumerate(_ranges(store.n_images, size))]
    return [g for g in groups if not store.is_done(stage, g.key, g.extent)]


def _require(store: Store, pending: Sequence[Any], what: str, how: str) -> None:
    if pending:
        raise IncompleteStageError(
            f"{len(pending)} unit(s) of the {what} stage are not done in {store.root}; "
            f"run {how} first."
        )


def compute_image_features(root: Root, group: Batch, *, descriptor: str = "cnn") -> Batch:
    """Pixel-weighted mean of each image's tile vectors, for one group of images.

    For image ``m`` with tiles ``t`` and weights ``w_t`` (``tile_weight``), writes
    ``sum_t w_t f_t / sum_t w_t`` (float64 sums, stored in the features' dtype) to rows
    ``group.start:group.stop`` of ``image_features/<descriptor>``, the float64 sum of
    those rows to row ``group.index`` of ``image_feature_sums/<descriptor>`` (the
    distance centre is their total over the images), then the completion record. Tiles
    whose row is NaN (constant tiles a descriptor could not rescale) are left out. Tile
    rows are read a feature chunk at a time, so memory is about
    ``group size * d * 8 + chunk * d * 12`` bytes.

    Raises
    ------
    StoreError
        If an image has no tile with texture.
    """
    descriptor = _check_descriptor(descriptor)
    store = _store(root)
    feats = f"features/{descriptor}"
    table = image_table(store, group.start, group.stop)
    bounds = table["image_tiles"]
    t0, t1 = int(bounds[0, 0]), int(bounds[-1, 1])
    weights = tile_table(store, t0, t1)["tile_weight"]
    owner = np.repeat(np.arange(len(bounds)), bounds[:, 1] - bounds[:, 0])
    d = array_shape(store, feats)[1]
    chunk = array_chunks(store, feats)[0]
    acc = np.zeros((len(bounds), d))
    wsum = np.zeros(len(bounds))
    start = t0
    while start < t1:
        stop = min((start // chunk + 1) * chunk, t1)  # never past a chunk boundary
        rows = read_rows(store, feats, start, stop)
        w = weights[start - t0 : stop - t0].copy()
        w[np.isnan(rows).any(axis=1)] = 0.0  # constant tiles: no texture
        rows = np.nan_to_num(rows, nan=0.0, copy=False)
        own = owner[start - t0 : stop - t0]
        for m in np.unique(own):
            sel = own == m
            acc[m] += np.dot(w[sel], rows[sel].astype(np.float64))
            wsum[m] += w[sel].sum()
        start = stop
    empty = np.flatnonzero(wsum <= 0)
    if empty.size:
        m = int(empty[0])
        raise StoreError(
            f"Image {group.start + m} ({table['image_path'][m]}) has no tile with texture "
            f"for {descriptor!r} (every tile is constant, or has weight 0); leave it out of "
            "the archive."
        )
    out = (acc / wsum[:, None]).astype(_feature_dtype(descriptor))
    write_block(store, f"image_features/{descriptor}", out, rows=(group.start, group.stop))
    total = out.sum(axis=0, dtype=np.float64)
    write_block(
        store, f"image_feature_sums/{descriptor}", total[None], rows=(group.index, group.index + 1)
    )
    store.mark_done(f"image_features.{descriptor}", group.key, group.extent)
    return group


def image_features(
    root: Root,
    *,
    descriptor: str = "cnn",
    client: Any = None,
    images_per_task: int | None = None,
    on_done: Progress | None = None,
    lock: bool = True,
) -> StageCounts:
    """Compute the missing image features (pixel-weighted means of tile features).

    Needs every feature batch done. Creates or grows ``image_features/<descriptor>``
    (n_images, d), in chunks of as many images as fit :data:`IMAGE_CHUNK_BYTES` and divide
    the group size (8 full texture vectors, 64 sketches: a task writes whole chunks of its
    own), and ``image_feature_sums/<descriptor>``, then
    runs :func:`compute_image_features` for each group without a matching record. When
    images were appended, only the groups holding new images are computed.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    client : distributed.Client, optional
        Run the groups as Dask tasks; None runs them here.
    images_per_task : int, optional
        Images per task (default 64); fixed when the stage first runs.
    on_done : callable, optional
        ``on_done(done, total)`` progress callback, in groups.
    lock : bool, optional
        Hold the store's run lock (default).

    Returns
    -------
    StageCounts
        Groups computed and groups skipped as done.

    Raises
    ------
    IncompleteStageError
        If some feature batches are not done.
    """
    descriptor = _check_descriptor(descriptor)
    store = _store(root)
    with _locked(store, lock):
        _require_features(store, descriptor)
        feats = f"features/{descriptor}"
        d = array_shape(store, feats)[1]
        dtype = _feature_dtype(descriptor)
        size = _group_size(store, descriptor, images_per_task)
        n = store.n_images
        n_groups = len(_ranges(n, size))
        source = dict(array_attrs(store, feats))
        name = f"image_features/{descriptor}"
        created = ensure_features_array(
            store,
            name,
            d,
            n_rows=n,
            chunk_rows=(
                array_chunks(store, name)[0]  # older stores: one image per chunk
                if has_array(store, name)
                else _image_chunk_rows(d * dtype.itemsize, size)
            ),
            dtype=dtype,
            row_dim="image",
            attrs=source,
        )
        ensure_array(
            store,
            f"image_feature_sums/{descriptor}",
            shape=(n_groups, d),
            chunks=(1, d),
            dtype=np.float64,
            dimension_names=("group", "feature"),
            attrs={"images_per_group": size},
        )
        if created:
            store.clear_done(f"image_features.{descriptor}")
        todo = plan_image_groups(store, descriptor=descriptor, images_per_task=size)
        _run_units(
            compute_image_features,
            _root(root),
            todo,
            client=client,
            on_done=on_done,
            descriptor=descriptor,
        )
        return StageCounts(computed=len(todo), skipped=n_groups - len(todo))


# --------------------------------------------------------------------------- distances


LEVELS = ("image", "tile")


@dataclass(frozen=True)
class _Level:
    """Where one level's rows, matrix, centre, records and embeddings live in the store.

    ``level="image"`` (default) maps images: rows are the pixel-weighted image features.
    ``level="tile"`` maps every tile: rows are the tile features themselves.
    """

    level: str
    descriptor: str

    @property
    def prefix(self) -> str:
        return "" if self.level == "image" else "tile_"

    @property
    def rows(self) -> str:
        base = "image_features" if self.level == "image" else "features"
        return f"{base}/{self.descriptor}"

    @property
    def matrix(self) -> str:
        return f"{self.prefix}distances/{self.descriptor}"

    @property
    def center(self) -> str:
        return f"{self.prefix}center/{self.descriptor}"

    @property
    def stage(self) -> str:
        return f"{self.prefix}distances.{self.descriptor}"

    def embedding(self, k: int) -> str:
        return f"{self.prefix}embeddings/{self.descriptor}/d{k}"

    def n(self, store: Store) -> int:
        return store.n_images if self.level == "image" else store.n_tiles


def _level(descriptor: str, level: str) -> _Level:
    if level not in LEVELS:
        raise ValueError(f"The 'level' parameter must be one of {LEVELS}. Got {level!r} instead.")
    return _Level(level, _check_descriptor(descriptor))


def distance_task_bytes(block_size: int, n_features: int, itemsize: int = 4) -> int:
    """Peak memory of one distance task, in bytes (see :func:`compute_distance_blocks`).

    Two row blocks, the distance block and its transpose, and the kernel's working memory,
    measured on the CPU as about 0.64 GB at 1024 rows and 0.17 GB at 256 (scratch and
    threaded BLAS buffers): 3.2 GB at ``block_size = 1024`` for full texture vectors
    (305,888 float32), 50 MB for 2048-long sketches.
    """
    b, d = int(block_size), int(n_features)
    return 2 * b * d * itemsize + 2 * b * b * 8 + 625_000 * b


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
    lv = _level(descriptor, level)
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
        return _check_positive(block_size, "block_size")
    d = array_shape(store, lv.rows)[1]
    itemsize = _feature_dtype(descriptor).itemsize
    memory = _task_memory(client)
    b = auto_block_size(d, memory, itemsize=itemsize)
    _log.info(
        "%s: blocks of %d rows (%.2f GB per task, %.1f GB per task slot)",
        name, b, distance_task_bytes(b, d, itemsize) / 1e9, memory / 1e9,
    )  # fmt: skip
    return b


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
    store = _store(store)
    lv = _level(descriptor, level)
    b = _block_size(store, descriptor, block_size, level)
    stage = lv.stage
    ranges = _ranges(lv.n(store), b)
    pairs = [
        BlockPair(i, j, ranges[i], ranges[j])
        for i in range(len(ranges))
        for j in range(i, len(ranges))
    ]
    return [p for p in pairs if not store.is_done(stage, p.key, p.extent)]


def _group_pairs(pairs: Sequence[BlockPair], per_task: int) -> list[list[BlockPair]]:
    """Consecutive pairs of one row block, at most ``per_task`` per group."""
    groups: list[list[BlockPair]] = []
    for pair in pairs:
        if groups and groups[-1][0].i == pair.i and len(groups[-1]) < per_task:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    return groups


def _image_sums_done(store: Store, descriptor: str) -> bool:
    return has_array(store, f"image_feature_sums/{descriptor}") and not plan_image_groups(
        store, descriptor=descriptor
    )


def _image_sums_total(store: Store, descriptor: str) -> np.ndarray:
    sums = f"image_feature_sums/{descriptor}"
    total = np.zeros(array_shape(store, sums)[1])
    for start, stop in _ranges(array_shape(store, sums)[0], 64):
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
    lv = _level(descriptor, level)
    name = lv.center
    n = lv.n(store)
    if has_array(store, name) and array_attrs(store, name).get("n_images") == n:
        return read_array(store, name)
    if level == "image" or (descriptor == "cnn" and _image_sums_done(store, descriptor)):
        center = _image_sums_total(store, descriptor) / store.n_images
    else:
        total = np.zeros(array_shape(store, lv.rows)[1])
        band = array_chunks(store, lv.rows)[0]
        buf = np.empty((min(band, n), len(total)), _feature_dtype(descriptor))
        for start, stop in _ranges(n, band):  # one reused buffer: no fresh pages per band
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


def _block_reads(pairs: Sequence[BlockPair]) -> list[tuple[int, int]]:
    """The row ranges :func:`compute_distance_blocks` reads, in the order it needs them."""
    reads, last = [], None
    for pair in pairs:
        if pair.i != last:
            reads.append(pair.rows)
            last = pair.i
        if pair.i != pair.j:
            reads.append(pair.cols)
    return reads


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
) -> list[BlockPair]:
    """Compute block pairs of the distance matrix, write them, mark each done.

    For each pair ``(i, j)`` the rows of blocks ``i`` and ``j`` of
    ``image_features/<d>`` are read, :func:`microscale.distance.block_sq_distances` is
    called with the centre stored by the driver (``Yb=None`` on the diagonal, which gives
    an exactly symmetric block with a zero diagonal), the square root is written to chunk
    ``(i, j)`` and its transpose to chunk ``(j, i)`` (so the matrix is exactly
    symmetric), and then the record is written. Consecutive pairs of one row block read
    it, and compute its row norms, once.

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
    at once, plus :data:`READ_AHEAD` block(s) being read in a thread while the kernel
    runs (1 on a GPU, 0 on a CPU by default). On a GPU the blocks are also copied to device memory.
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

    Returns
    -------
    list of BlockPair
        ``pairs``, once written and recorded.
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    lv = _level(descriptor, level)
    store = _store(root)
    feats, name, stage = lv.rows, lv.matrix, lv.stage
    center = read_array(store, lv.center)
    reader = _BlockReader(
        lambda r, out: read_rows(store, feats, *r, out=out),
        _block_reads(pairs),
        width=array_shape(store, feats)[1],
        dtype=_feature_dtype(descriptor),
        ahead=_read_ahead(device),
    )
    with reader:
        cached: tuple[int, np.ndarray, np.ndarray] | None = None
        for pair in pairs:
            if cached is None or cached[0] != pair.i:
                if cached is not None:  # the previous row block's buffer, before the next
                    reader.give_back(cached[1])
                    cached = None
                xi = reader.take()
                ni = row_sq_norms(xi, center=center, precision=precision, device=device)
                cached = (pair.i, xi, ni)
            _, xi, ni = cached
            if pair.i == pair.j:
                d2 = block_sq_distances(
                    xi,
                    None,
                    center=center,
                    x_sq_norms=ni,
                    precision=precision,
                    device=device,
                    keep_scratch=True,
                )
            else:
                xj = reader.take()
                d2 = block_sq_distances(
                    xi,
                    xj,
                    center=center,
                    x_sq_norms=ni,
                    precision=precision,
                    device=device,
                    keep_scratch=True,
                )
                reader.give_back(xj)
            dist = np.sqrt(d2, out=d2)
            write_block(store, name, dist, rows=pair.rows, cols=pair.cols)
            if pair.i != pair.j:
                write_block(
                    store, name, np.ascontiguousarray(dist.T), rows=pair.cols, cols=pair.rows
                )
            store.mark_done(stage, pair.key, pair.extent)
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


def _release_scratch(client: Any) -> None:
    """Free the block buffers the stage's tasks kept (:mod:`microscale.scratch`), everywhere."""
    scratch.release()
    if client is None:
        return
    try:
        client.run(scratch.release)
    except Exception as exc:  # a lost cluster frees its memory anyway
        _log.warning("could not release the scratch buffers of the Dask workers: %s", exc)


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
       submits them in groups of up to ``pairs_per_task`` pairs of one row block (one
       Dask task per group: :func:`compute_distance_blocks`);
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
        Block pairs per task (they share the row block).
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
    lv = _level(descriptor, level)
    per_task = _check_positive(pairs_per_task, "pairs_per_task")
    store = _store(root)
    with _locked(store, lock):
        if level == "tile":
            _require_features(store, descriptor)
        elif not has_array(store, f"image_feature_sums/{descriptor}"):
            raise IncompleteStageError(
                f"The store {store.root} has no image features for {descriptor!r}; run "
                f"image_features(descriptor={descriptor!r}) first."
            )
        if level == "image":
            _require(
                store,
                plan_image_groups(store, descriptor=descriptor),
                f"image_features.{descriptor}",
                f"image_features(descriptor={descriptor!r})",
            )
        n = lv.n(store)
        b = _block_size(store, descriptor, block_size, level, client=client)
        _ensure_center(store, descriptor, level)
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
        todo = plan_distance_blocks(store, descriptor=descriptor, block_size=b, level=level)
        nb = len(_ranges(n, b))
        groups = _group_pairs(todo, per_task)
        try:
            _run_units(
                compute_distance_blocks,
                _root(root),
                groups,
                client=client,
                on_done=on_done,
                sizes=[len(g) for g in groups],
                descriptor=descriptor,
                precision=precision,
                device=device,
                level=level,
            )
        finally:
            _release_scratch(client)
        return StageCounts(computed=len(todo), skipped=nb * (nb + 1) // 2 - len(todo))


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
    lv: _Level,
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
    from microscale.manifold import mds

    n = lv.n(store)
    D = read_rows(store, lv.matrix)
    fresh, infos = mds(
        D,
        dims,
        n_init=n_init,
        max_iter=max_iter,
        eps=eps,
        random_state=random_state,
        device=device,
        return_info=True,
    )
    embeddings: dict[int, np.ndarray] = {}
    stresses: dict[int, float] = {}
    starts: dict[int, str] = {}
    for k in dims:
        X, sigma, start = fresh[k], infos[k].stress, "classical"
        previous = _previous_embedding(store, lv, k, n) if init_from_previous else None
        if previous is not None:
            X0 = _extend_embedding(previous, D)
            Xp, info = mds(
                D, k, init=X0, max_iter=max_iter, eps=eps, device=device, return_info=True
            )
            if info.stress <= sigma:
                X, sigma, start = Xp, info.stress, "previous"
            X = _align(X, previous)
        embeddings[k], stresses[k], starts[k] = X, float(sigma), start
    return embeddings, stresses, starts


def _previous_embedding(store: Store, lv: _Level, k: int, n: int) -> np.ndarray | None:
    """The stored ``k``-dimensional embedding of the first ``n0 <= n`` rows, if any."""
    name = lv.embedding(k)
    if not has_array(store, name):
        return None
    previous = read_array(store, name)
    return previous if previous.shape[1] == k and 0 < len(previous) <= n else None


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
    for start, stop in _ranges(n, array_chunks(store, name)[0]):
        out[start:stop] = rows(start, stop)[:, landmarks]
    return out


def _embed_landmark(
    store: Store,
    lv: _Level,
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
    from microscale.manifold import choose_landmarks, landmark_mds, stresses_from_rows

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
    dims: Iterable[int] | None = None,
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
) -> dict[str, Any]:
    """Metric MDS of the store's distance matrix, in each dimension of ``dims``.

    Every block pair of the matrix must be done. Two methods:

    **Dense** (``n <= max_dense`` and ``landmarks`` None): reads the whole (n, n) matrix
    and runs :func:`microscale.manifold.mds` from classical MDS. When the store holds an
    embedding from an earlier run (``embeddings/<d>/d<k>``, over the first ``n0 <= n``
    images) and ``init_from_previous``, SMACOF is also run from that embedding, extended
    to the new images by placing each at the mean of its 5 nearest old images; the start
    with the lower stress is kept, and the result is rotated/reflected onto the previous
    embedding (orthogonal Procrustes on the old images; the stress is unchanged), so that
    maps of a growing archive stay comparable.

    **Landmark** (``n > max_dense``, or ``landmarks`` given): ``m`` landmarks are drawn
    at random (:func:`microscale.manifold.choose_landmarks`, seeded by
    ``random_state``), the (n, m) distances to them are read from the store one row band
    (one row of chunks, ``(block_size, n)``) at a time, and
    :func:`microscale.manifold.landmark_mds` embeds the landmarks by SMACOF and places
    every other point against them. Memory is ``O(n m + block_size n)``; the matrix is
    never held. The price of the approximation is reported: the stress is Kruskal's
    stress-1 of the **full** matrix, streamed in row bands by
    :func:`microscale.manifold.stresses_from_rows` (one pass over the matrix for all
    dimensions). With ``init_from_previous``, the result is rotated onto the stored
    embedding as above, but not started from it (there is no full-matrix SMACOF to
    start); ``n_init`` is not used.

    Parameters
    ----------
    root : path or Store
    descriptor : {"cnn", "ps"}, optional
    dims : iterable of int, optional
        Embedding dimensions, each < n (and < the number of landmarks); default
        1 .. min(10, n - 1).
    init_from_previous : bool, optional
        Also start from the stored embedding (when there is one); landmark MDS only
        aligns to it.
    n_init, max_iter, eps, random_state, device
        Passed to :func:`microscale.manifold.mds` (dense) or
        :func:`microscale.manifold.landmark_mds` (landmark; ``random_state`` also picks
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

    Returns
    -------
    dict
        ``descriptor``; ``level``; ``n_images``; ``image_ids`` and ``image_paths`` (n,)
        str; ``embeddings`` {k: (n, k) float64}; ``stress`` {k: Kruskal stress-1 of the
        full matrix}; ``start`` {k: "classical", "previous" or "landmark"}; ``method``
        ("dense" or "landmark"); ``n_landmarks`` (int, or None for dense). Build the
        labelled result with :func:`microscale.results.build_dataset`.

    Raises
    ------
    IncompleteStageError
        If some block pairs of the distance matrix are not done.
    ValueError
        If the landmarks (at most ``n``: more are capped) are not more than every
        dimension.
    """
    lv = _level(descriptor, level)
    max_dense = _check_positive(max_dense, "max_dense")
    if landmarks is not None:
        landmarks = _check_positive(landmarks, "landmarks")
    store = _store(root)
    name = lv.matrix
    with _locked(store, lock):
        n = lv.n(store)
        if not has_array(store, name) or array_shape(store, name) != (n, n):
            raise IncompleteStageError(
                f"The store {store.root} has no complete {name} for its {n} {level}s; run "
                f"run_distances(descriptor={descriptor!r}, level={level!r}) first."
            )
        _require(
            store,
            plan_distance_blocks(store, descriptor=descriptor, level=level),
            lv.stage,
            f"run_distances(descriptor={descriptor!r}, level={level!r})",
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
            embeddings, stresses, starts = _embed_dense(store, lv, dims, n_init=n_init, **options)
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
            embeddings, stresses, starts = _embed_landmark(store, lv, dims, m, **options)
        if save:
            for k in dims:
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
    }
