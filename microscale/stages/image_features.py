"""Stage 2, image features: the pixel-weighted mean of each image's tile vectors.

Tiles and images share one space. :func:`image_features` runs one
task per group of images, :func:`compute_image_features`, which also keeps each group's
float64 sum (``image_feature_sums/<d>``), from which the distance stage takes its centre.
Tiles whose feature row is NaN (constant tiles a descriptor could not rescale) are left
out of their image's mean; an image with no describable tile is an error.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from microscale._validation import check_positive_int
from microscale.errors import StoreError
from microscale.stages._runner import (
    Batch,
    Progress,
    Root,
    StageCounts,
    as_store,
    check_descriptor,
    drop_damaged,
    locked,
    require_intact,
    root_path,
    row_ranges,
    run_units,
)
from microscale.stages.features import feature_dtype, require_features
from microscale.store import (
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    ensure_array,
    ensure_features_array,
    has_array,
    image_table,
    read_rows,
    tile_table,
    write_block,
)

__all__ = [
    "DEFAULT_IMAGES_PER_TASK",
    "IMAGE_CHUNK_BYTES",
    "compute_image_features",
    "image_features",
    "plan_image_groups",
]

_log = logging.getLogger(__name__)

#: Images per image-feature task (one row of ``image_feature_sums``).
DEFAULT_IMAGES_PER_TASK = 64
#: Largest chunk of ``image_features/<d>`` (bytes): a block read of the distance stage
#: opens one file per chunk. Measured reading 1024 full texture vectors from Zarr on the
#: dev VM, side by side: chunks of 1 row (1.2 MB) 3.3-3.6 GB/s, of 8 rows (9.8 MB)
#: 4.2-5.3 GB/s, of 64 rows (78 MB: past glibc's mmap threshold, fresh pages each time)
#: 2.3-2.5 GB/s; with a Dask worker's malloc settings 3.3-4.0, 3.2-3.7 and 2.4-2.7 GB/s.
#: So 8 rows: as fast or faster, and 8 times fewer files than one per image.
IMAGE_CHUNK_BYTES = 16 * 2**20

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
    return check_positive_int(images_per_task, "images_per_task")


def plan_image_groups(
    store: Root, *, descriptor: str = "cnn", images_per_task: int | None = None
) -> list[Batch]:
    """Groups of images whose image features are missing or stale.

    Group ``g`` is images ``[g * G, min((g + 1) * G, n_images))``; ``G`` is fixed when the
    stage first runs (``images_per_task``, default 64).
    """
    store = as_store(store)
    descriptor = check_descriptor(descriptor)
    size = _group_size(store, descriptor, images_per_task)
    stage = f"image_features.{descriptor}"
    groups = [Batch(g, a, b) for g, (a, b) in enumerate(row_ranges(store.n_images, size))]
    return [g for g in groups if not store.is_done(stage, g.key, g.extent)]


def _feature_batches_of(store: Store, feats: str, groups: list[Batch]) -> list[str]:
    """Keys of the feature batches (chunks of ``feats``) holding the tiles of ``groups``."""
    if not groups:
        return []
    bounds = image_table(store)["image_tiles"]
    c = array_chunks(store, feats)[0]
    keys: set[int] = set()
    for g in groups:
        t0, t1 = int(bounds[g.start, 0]), int(bounds[g.stop - 1, 1])
        keys.update(range(t0 // c, -(-t1 // c)))
    return [f"{k:09d}" for k in sorted(keys)]


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
    descriptor = check_descriptor(descriptor)
    store = as_store(root)
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
    out = (acc / wsum[:, None]).astype(feature_dtype(descriptor))
    write_block(store, f"image_features/{descriptor}", out, rows=(group.start, group.stop))
    total = out.sum(axis=0, dtype=np.float64)
    sums, rows = f"image_feature_sums/{descriptor}", (group.index, group.index + 1)
    write_block(store, sums, total[None], rows=rows)
    covers = [(f"image_features/{descriptor}", (group.start, group.stop)), (sums, rows)]
    store.mark_done(f"image_features.{descriptor}", group.key, group.extent, covers=covers)
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
    descriptor = check_descriptor(descriptor)
    store = as_store(root)
    with locked(store, lock):
        require_features(store, descriptor)
        feats = f"features/{descriptor}"
        d = array_shape(store, feats)[1]
        dtype = feature_dtype(descriptor)
        size = _group_size(store, descriptor, images_per_task)
        n = store.n_images
        n_groups = len(row_ranges(n, size))
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
        drop_damaged(store, f"image_features.{descriptor}")  # damaged groups are redone
        todo = plan_image_groups(store, descriptor=descriptor, images_per_task=size)
        require_intact(  # the feature batches the groups read, hashed
            store,
            f"features.{descriptor}",
            _feature_batches_of(store, feats, todo),
            how=f"run_features(descriptor={descriptor!r})",
        )
        run_units(
            compute_image_features,
            root_path(root),
            todo,
            client=client,
            on_done=on_done,
            descriptor=descriptor,
        )
        return StageCounts(computed=len(todo), skipped=n_groups - len(todo))
