"""Stage 1, features: a texture vector (``"cnn"``) or power spectrum (``"ps"``) per tile.

:func:`run_features` runs one task per feature batch (= one chunk of ``features/<d>``),
:func:`compute_feature_batch`; optionally texture vectors are stored only as seeded random
projections of a few thousand dimensions (``sketch_dim``: ~100x less storage and distance
cost), made on the workers.

Constant tiles
--------------
Tiles are stored normalised with their whole image, so a flat tile (a saturated or empty
region) is a valid part of a textured image: with ``normalize=None`` (the default) its
texture vector is computed like any other. A descriptor that rescales each tile on its own
cannot describe it (the power spectrum's min/max rescaling, or ``"cnn"`` with a
``normalize`` mapping): its feature row is left NaN and it is left out of its image's
mean (:mod:`microscale.stages.image_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from microscale._validation import check_non_negative_int, check_positive_int
from microscale.errors import IncompleteStageError, StoreError
from microscale.stages._runner import (
    Batch,
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
from microscale.store import (
    TILES_STAGE,
    Store,
    array_attrs,
    array_chunks,
    ensure_features_array,
    has_array,
    read_rows,
    read_tiles,
    tile_chunks,
    write_block,
)
from microscale.weights import DEFAULT_LAYERS, DEFAULT_WEIGHTS

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SKETCHED_DESCRIPTORS",
    "SKETCH_BLOCK",
    "compute_feature_batch",
    "feature_dtype",
    "plan_feature_batches",
    "require_features",
    "run_features",
]

_log = logging.getLogger(__name__)

#: Descriptors that ``sketch_dim`` applies to. Only the texture vectors (305,888 entries)
#: are sketched; the power spectrum is the paper's exact baseline and stays as it is.
SKETCHED_DESCRIPTORS: tuple[str, ...] = ("cnn",)
#: Rows of the implicit projection matrix drawn at a time by a sketch (the default of
#: :func:`microscale.sketch.sketch`); recorded with the sketch, as part of its identity.
SKETCH_BLOCK = 16384
#: Tiles per forward pass when neither the caller nor a calibration says
#: (:mod:`microscale.calibration`).
DEFAULT_BATCH_SIZE = 8

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
        return n_features(layers, weights=weights), feature_dtype(descriptor), attrs
    s = store.tile_size
    return s * s, feature_dtype(descriptor), {"descriptor": "ps", "tile_size": s}


def feature_dtype(descriptor: str) -> np.dtype:
    """Texture vectors are float32 (as texture_vectors returns them), spectra float64."""
    return np.dtype(np.float32 if descriptor == "cnn" else np.float64)


def _weights_sha256(weights: Any) -> str:
    """The backbone's identity: its weights' sha256 (the random network's: its filters')."""
    from microscale.backbones import describe_backbone

    return describe_backbone(weights).sha256


def _features_chunk(store: Store, descriptor: str) -> int:
    name = f"features/{descriptor}"
    return array_chunks(store, name)[0] if has_array(store, name) else store.features_chunk


def _sketch_setting(
    descriptor: str, n_features: int, *, sketch_dim: int | None, sketch_seed: int
) -> dict[str, int] | None:
    """The ``"sketch"`` attribute of ``features/<descriptor>`` for a run, or None.

    A descriptor is sketched when ``sketch_dim`` is given, it is one of
    :data:`SKETCHED_DESCRIPTORS` and its vectors are longer than ``sketch_dim`` (a sketch
    as long as the vector would save nothing and only add noise).
    """
    seed = check_non_negative_int(sketch_seed, "sketch_seed")
    if sketch_dim is None:
        return None
    k = check_positive_int(sketch_dim, "sketch_dim")
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
    store = as_store(store)
    descriptor = check_descriptor(descriptor)
    stage = f"features.{descriptor}"
    c = _features_chunk(store, descriptor)
    batches = [Batch(k, a, b) for k, (a, b) in enumerate(row_ranges(store.n_tiles, c))]
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
    channels_last: bool | None = None,
    on_progress: Callable[[int], None] | None = None,
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
    channels_last : bool, optional
        Memory format of the forward pass (:func:`~microscale.texture.texture_vectors`);
        None: as `precision` implies.
    on_progress : callable, optional
        Called with the batch's tiles done so far (of ``batch.stop - batch.start``; the
        rows a grown batch keeps and constant tiles count as done) after each forward
        pass (``"cnn"`` only): how :func:`run_features` reports progress within a batch.

    Returns
    -------
    Batch
        ``batch``, once written and recorded.
    """
    descriptor = check_descriptor(descriptor)
    batch_size = check_positive_int(batch_size, "batch_size")
    store = as_store(root)
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

            ready = kept + int((~textured).sum())  # tiles that need no forward pass
            passed = None if on_progress is None else (lambda n: on_progress(ready + n))

            def compute(size: int) -> np.ndarray:
                return texture_vectors(
                    x,
                    weights=weights,
                    layers=layers,
                    normalize=normalize,
                    device=device,
                    batch_size=size,
                    precision=precision,
                    channels_last=channels_last,
                    on_progress=passed,
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
    store.mark_done(stage, batch.key, batch.extent, covers=[(name, (batch.start, batch.stop))])
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
    channels_last: bool | None = None,
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
        ``on_done(done, total)`` in tiles: once with ``done = 0``, after each batch, and
        while batches run (``"cnn"``: after their forward passes, at most every
        :data:`~microscale.stages._unit_progress.REPORT_EVERY_S` seconds; on a client
        the workers send the counts as Dask events). Never backwards; ``done = total``
        once every batch is written and recorded.
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
    channels_last : bool, optional
        Memory format of the forward pass; None: as `precision` implies. The pipeline
        passes the one :mod:`microscale.calibration` measured fastest, with its batch size.

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
    descriptor = check_descriptor(descriptor)
    store = as_store(root)
    with locked(store, lock):
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
        stage = f"features.{descriptor}"
        if created:
            store.clear_done(stage)  # records of a deleted array
        drop_damaged(store, stage)  # damaged batches are computed again
        todo = plan_feature_batches(store, descriptor=descriptor)
        # what the batches read: the rows a growing batch keeps, and their tiles, hashed
        recorded = store.done_keys(stage)
        drop_damaged(store, stage, full=True, keys=[b.key for b in todo if b.key in recorded])
        require_intact(
            store,
            TILES_STAGE,
            sorted({key for b in todo for key, _ in tile_chunks(store, b.start, b.stop)}),
            how="`microscale run` with the archive (its ingest rebuilds them from the files)",
        )
        n_all = len(row_ranges(store.n_tiles, _features_chunk(store, descriptor)))
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
                channels_last=channels_last,
            )
        run_units(
            compute_feature_batch, root_path(root), todo, client=client, on_done=on_done,
            sizes=[b.stop - b.start for b in todo], progress_within=descriptor == "cnn",
            **kwargs,
        )  # fmt: skip
        return StageCounts(computed=len(todo), skipped=n_all - len(todo))


def require_features(store: Store, descriptor: str) -> None:
    """Raise unless every feature batch of ``descriptor`` is done."""
    require_done(
        store,
        plan_feature_batches(store, descriptor=descriptor),
        f"features.{descriptor}",
        f"run_features(descriptor={descriptor!r})",
    )
    if not has_array(store, f"features/{descriptor}"):
        raise IncompleteStageError(
            f"The store {store.root} has no features/{descriptor}; run run_features first."
        )
