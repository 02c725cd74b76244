"""Query an archive by texture: the nearest archive images to a new micrograph.

:func:`similar` answers "which micrographs of the archive look like this one?" for a store
that the pipeline has filled (:mod:`microscale.stages`):

1. **The query's vector** (:func:`query_vector`). The file is prepared exactly as the
   ingest stage prepared the archive's files, by the same function
   (:mod:`microscale.ingest`: NaN/inf pixels, information bar, resampling to the store's
   pixel size, intensity normalisation, tiling with the store's tile size, stride and
   ``min_fraction``; pages above ``max_pixels`` are streamed), with the settings recorded
   in the store's ``ingest`` attribute. Its tiles are described with the store's
   descriptor settings (``features/<d>`` attributes: layers, tile normalisation; for
   ``"cnn"`` the weights must be the ones whose sha256 the store records) and averaged
   with their pixel weights, as the image-feature stage does
   (:func:`microscale.stages.image_features.compute_image_features`).
   When the store's features are sketched (attribute ``"sketch"``), the tile vectors are
   sketched with the same projection first. A query whose content (sha256, and page) is
   already in the archive is not recomputed: its stored vector is used, so it comes back
   first, at distance exactly 0.
2. **Its distances** to every archive image, exact, with the kernel of the distance stage
   (:func:`microscale.distance.block_sq_distances`, same centre: the mean of all image
   vectors), streaming ``image_features/<d>`` in bands of rows: memory is
   ``O(band * d + n)``, never the whole array. The ``k`` nearest are returned ranked by
   distance, ties broken by image index.
3. **Its place in each stored embedding** (``embeddings/<d>/d<k>``), out of sample,
   without recomputing the map: :func:`microscale.landmark.out_of_sample` (de Silva &
   Tenenbaum's triangulation, then Guttman steps on the query's stress against every
   embedded image). The triangulation needs the column means of the archive's squared
   distances; they are exact here and cost nothing, because for vectors ``f_i`` of mean
   ``c`` they are ``mean_i |f_i - c|**2 + |f_j - c|**2``, and those norms are what the
   kernel computes anyway. An embedding made before images were added covers only the
   first ``n_e`` images; the query is then placed against those, with the means of the
   embedding's own distances. A query that is an archive image already embedded is not
   placed: its position is its stored one.

Only the image-level map is queried (``level="image"``); tile maps are not.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microscale import io
from microscale._validation import check_int, check_one_of
from microscale.errors import IncompleteStageError, StoreError, WeightsMismatchError
from microscale.ingest import STORE_PARAMS, prepare_page, with_retries
from microscale.stages.distances import image_sums_total
from microscale.stages.image_features import plan_image_groups
from microscale.store import (
    DESCRIPTORS,
    Store,
    array_attrs,
    array_chunks,
    array_shape,
    has_array,
    image_table,
    open_store,
    read_array,
    read_rows,
)
from microscale.weights import DEFAULT_LAYERS, DEFAULT_WEIGHTS

if TYPE_CHECKING:
    import xarray as xr

    from microscale.weights import VGGWeights

__all__ = ["QueryVector", "SimilarResult", "WeightsMismatchError", "query_vector", "similar"]

#: Bytes of image features read at once (one band of rows), by default.
DEFAULT_BAND_BYTES = 256 * 2**20


@dataclass(frozen=True)
class QueryVector:
    """A query's image vector, in the space of the store's ``image_features/<d>``.

    Attributes
    ----------
    vector : (d,) ndarray
        float32 (``"cnn"``) or float64 (``"ps"``), sketched when the store is.
    image_id : str
        Content identity as the store records it: the file's sha256, with ``#p<page>``
        for a page of a multi-page file.
    archive_index : int or None
        Index of the archive image with the same content, or None.
    n_tiles : int
        Tiles the vector averages (0 when the stored vector was used).
    """

    vector: np.ndarray
    image_id: str
    archive_index: int | None
    n_tiles: int


@dataclass(frozen=True)
class SimilarResult:
    """The ``k`` archive images nearest to a query, and the query's place in the map.

    Attributes
    ----------
    query : str
        The query file, with ``#<page>`` for a page of a multi-page file.
    query_id : str
        Its content identity (sha256, ``#p<page>`` for a page of a multi-page file).
    descriptor : str
        ``"cnn"`` or ``"ps"``.
    in_archive : int or None
        Index of the archive image with the same content, or None. It is then rank 1, at
        distance 0.
    indices : (k,) ndarray of int64
        Archive image indices, nearest first (ties by index).
    image_ids, paths : (k,) ndarray of object (str)
        Their content ids and archive paths.
    distances : (k,) ndarray of float64
        Texture distances from the query, ascending.
    positions : dict of int to (n_components,) ndarray
        The query's coordinates in each stored embedding, by dimension.
    placement_stress : dict of int to float
        Stress-1 of the query's placement against the embedded images,
        ``sqrt(sum_j (r_j - |x - x_j|)**2 / sum_j r_j**2)`` (0 for a perfect fit).
    n_images : int
        Images searched.
    sketch : dict or None
        The store's sketch settings, when the distances were computed on sketches.
    """

    query: str
    query_id: str
    descriptor: str
    in_archive: int | None
    indices: np.ndarray
    image_ids: np.ndarray
    paths: np.ndarray
    distances: np.ndarray
    positions: dict[int, np.ndarray] = field(default_factory=dict)
    placement_stress: dict[int, float] = field(default_factory=dict)
    n_images: int = 0
    sketch: dict[str, Any] | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One dict per neighbour: rank, distance, path, image id, index."""
        return [
            {
                "rank": r + 1,
                "distance": float(d),
                "path": str(p),
                "image_id": str(i),
                "index": int(j),
            }
            for r, (d, p, i, j) in enumerate(
                zip(self.distances, self.paths, self.image_ids, self.indices, strict=True)
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values (what the CLI's ``--json`` prints).

        ``positions`` and ``placement_stress`` are keyed by the embedding dimension.
        """
        return {
            "query": self.query,
            "query_id": self.query_id,
            "descriptor": self.descriptor,
            "in_archive": self.in_archive,
            "n_images": self.n_images,
            "neighbours": self.rows(),
            "positions": {int(k): [float(v) for v in x] for k, x in self.positions.items()},
            "placement_stress": {int(k): float(v) for k, v in self.placement_stress.items()},
        }

    def to_dataset(self) -> xr.Dataset:
        """The result as an xarray Dataset.

        ``distance``, ``image_path``, ``image_id`` and ``image_index`` on a ``neighbour``
        dimension whose coordinate is the rank (1 = nearest); ``position_d<k>`` on
        ``component_d<k>`` for each stored embedding dimension ``k``, with its
        ``placement_stress`` in the attributes; the query, its id, the descriptor and
        whether it is in the archive (its index, -1 when not) as attributes.
        """
        import xarray as xr

        rank = np.arange(1, len(self.indices) + 1)
        data: dict[str, Any] = {
            "distance": ("neighbour", self.distances, {"long_name": "texture distance"}),
            "image_path": ("neighbour", self.paths.astype(str)),
            "image_id": ("neighbour", self.image_ids.astype(str)),
            "image_index": ("neighbour", self.indices),
        }
        for k, x in sorted(self.positions.items()):
            data[f"position_d{k}"] = (
                f"component_d{k}",
                x,
                {
                    "long_name": f"query's coordinates in the {k}-D embedding",
                    "placement_stress": self.placement_stress[k],
                },
            )
        attrs = {
            "query": self.query,
            "query_id": self.query_id,
            "descriptor": self.descriptor,
            "in_archive": -1 if self.in_archive is None else self.in_archive,
            "n_images": self.n_images,
            "sketched": int(self.sketch is not None),
        }
        return xr.Dataset(data, coords={"neighbour": rank}, attrs=attrs)


# --------------------------------------------------------------------------- helpers


def _open(store: Store | str | os.PathLike[str]) -> Store:
    return store if isinstance(store, Store) else open_store(store, mode="r")


def _require_image_features(st: Store, descriptor: str) -> str:
    """Name of the complete ``image_features/<d>``; a clear error otherwise."""
    name = f"image_features/{descriptor}"
    if st.n_images == 0:
        raise IncompleteStageError(
            f"The store {st.root} holds no images; run `microscale run ARCHIVE --store "
            f"{st.root}` first."
        )
    if not has_array(st, name) or plan_image_groups(st, descriptor=descriptor):
        raise IncompleteStageError(
            f"The store {st.root} has no complete {descriptor!r} image features for its "
            f"{st.n_images} images; run `microscale run ARCHIVE --store {st.root} "
            f"--descriptors {descriptor}` (or pipeline.run_features and "
            "pipeline.image_features) first."
        )
    return name


def _ingest_params(st: Store) -> dict[str, Any]:
    params = st.attrs.get("ingest")
    if not isinstance(params, dict) or set(STORE_PARAMS) - set(params):
        raise StoreError(
            f"The store {st.root} does not record how its images were prepared (its 'ingest' "
            "attribute is missing or incomplete), so a query cannot be prepared the same "
            "way. Query a store made by `microscale run` (ingest_archive)."
        )
    return {key: params[key] for key in STORE_PARAMS}


def _load_weights(weights: str | Path | VGGWeights, expected: str | None) -> VGGWeights:
    from microscale.weights import VGGWeights, load_weights

    loaded = weights if isinstance(weights, VGGWeights) else load_weights(weights)
    if expected is not None and loaded.sha256 != expected:
        raise WeightsMismatchError(
            f"The store's texture vectors were computed with the weights of sha256 "
            f"{expected}, but the weights given ({loaded.source}) have sha256 "
            f"{loaded.sha256}. Pass the same weights the store was computed with."
        )
    return loaded


def _sketch_spec(attrs: dict[str, Any]) -> dict[str, Any] | None:
    spec = attrs.get("sketch")
    if spec is None:
        return None
    missing = {"n_components", "seed", "input_dim", "block"} - set(spec)
    if missing:
        raise StoreError(
            f"The store's sketch attribute {spec!r} lacks {sorted(missing)}; it cannot be "
            "reproduced for the query."
        )
    return dict(spec)


# --------------------------------------------------------------------------- the query vector


def query_vector(
    image: str | os.PathLike[str],
    store: Store | str | os.PathLike[str],
    *,
    descriptor: str = "cnn",
    page: int = 0,
    weights: str | Path | VGGWeights = DEFAULT_WEIGHTS,
    device: str | None = None,
    batch_size: int = 8,
    max_pixels: int = 2**28,
    reuse: bool = True,
) -> QueryVector:
    """A micrograph's image vector, made exactly as the store made its own.

    Parameters
    ----------
    image : path
        A micrograph file in any format :func:`microscale.io.read_micrograph` reads.
    store : path or Store
        A store whose ``image_features/<descriptor>`` are complete.
    descriptor : {"cnn", "ps"}, optional
    page : int, optional
        The page of a multi-page file (a query is one page).
    weights : str, Path or VGGWeights, optional
        The VGG-19 weights (``"cnn"``); their sha256 must be the store's.
    device : str, optional
        Torch device; default the GPU when there is one.
    batch_size : int, optional
        Tiles per forward pass.
    max_pixels : int, optional
        As in :func:`microscale.ingest.ingest_archive` (larger tiled TIFF pages are
        streamed).
    reuse : bool, optional
        When the query's content is in the archive, return its stored vector (default)
        rather than recomputing it.

    Returns
    -------
    QueryVector

    Raises
    ------
    IncompleteStageError
        If the store has no complete image features for ``descriptor``.
    WeightsMismatchError
        If ``weights`` are not the store's.
    ValueError
        If the file is not an image, cannot be decoded, is constant or too small for one
        tile (the reason the ingest stage would record), or its vector does not have the
        length of the store's.
    """
    descriptor = check_one_of(descriptor, "descriptor", DESCRIPTORS)
    page = check_int(page, "page", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    st = _open(store)
    name = _require_image_features(st, descriptor)
    attrs = array_attrs(st, name)
    d = array_shape(st, name)[1]
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"The query image {os.fspath(path)!r} is not a file.")

    if io.sniff_format(path) is None:
        raise io.UnsupportedFormatError(
            f"{os.fspath(path)!r} is not an image in a format microscale reads (content "
            "sniffing). Pass a TIFF, PNG, JPEG, BMP or DM file."
        )
    digest = with_retries(lambda: io.file_digest(path))
    n_pages = with_retries(lambda: io.count_pages(path))
    if page >= n_pages:
        raise ValueError(
            f"The 'page' parameter must be < {n_pages}, the pages of {os.fspath(path)!r}. "
            f"Got {page} instead."
        )
    image_id = digest if n_pages == 1 else f"{digest}#p{page}"
    index = st.image_index(image_id)
    if index is not None and reuse:
        row = read_rows(st, name, index, index + 1)[0]
        return QueryVector(row, image_id, index, 0)

    label = path.name if n_pages == 1 else f"{path.name}#{page}"
    prepared = prepare_page(path, label, page, image_id, _ingest_params(st), max_pixels)
    if prepared.status != "processed":
        raise ValueError(
            f"The query {label!r} cannot be described as the archive was: {prepared.kind} "
            f"({prepared.reason})."
        )
    tiles, w = prepared.tiles, np.asarray(prepared.weights, dtype=np.float64)
    assert tiles is not None
    normalize = attrs.get("normalize")
    if descriptor == "cnn" and normalize is None:
        textured = np.ones(len(tiles), dtype=bool)  # as compute_feature_batch
    else:
        flat = tiles.reshape(len(tiles), -1)
        textured = flat.min(axis=1) < flat.max(axis=1)
    if not textured.any():
        raise ValueError(
            f"The query {label!r} has no tile with texture for {descriptor!r} (every tile is "
            "constant)."
        )
    x = tiles[textured]
    if descriptor == "cnn":
        from microscale.texture import texture_vectors

        loaded = _load_weights(weights, attrs.get("weights_sha256"))
        vecs = texture_vectors(
            x,
            weights=loaded,
            layers=tuple(attrs.get("layers") or DEFAULT_LAYERS),
            normalize=normalize,
            device=device,
            batch_size=batch_size,
            precision=attrs.get("precision", "float32"),  # as the store's vectors were made
        )
        dtype = np.float32
    else:
        from microscale.spectrum import power_spectra

        vecs = power_spectra(x, dtype=np.float64)
        dtype = np.float64
    spec = _sketch_spec(attrs)
    if spec is not None:
        from microscale.sketch import sketch

        if vecs.shape[1] != int(spec["input_dim"]):
            raise ValueError(
                f"The query's {descriptor!r} vectors have {vecs.shape[1]} entries, but the "
                f"store sketched vectors of {spec['input_dim']}; the descriptor settings differ."
            )
        vecs = sketch(
            vecs,
            n_components=int(spec["n_components"]),
            seed=int(spec["seed"]),
            block=int(spec["block"]),
            device=device,
        )
    wt = w[textured]
    vector = (wt @ vecs.astype(np.float64) / wt.sum()).astype(dtype)
    if vector.shape != (d,):
        raise ValueError(
            f"The query's vector has {vector.shape[0]} entries but the store's {name} rows "
            f"have {d}; the store was computed with other descriptor settings."
        )
    return QueryVector(vector, image_id, index, int(textured.sum()))


# --------------------------------------------------------------------------- the search


def _center(st: Store, descriptor: str, name: str, n: int, band: int) -> np.ndarray:
    """The mean of all image vectors (the distance stage's centre), read-only."""
    center = f"center/{descriptor}"
    if has_array(st, center) and array_attrs(st, center).get("n_images") == n:
        return read_array(st, center)
    if has_array(st, f"image_feature_sums/{descriptor}"):
        return image_sums_total(st, descriptor) / n  # the distance stage's own sum
    total = np.zeros(array_shape(st, name)[1])
    for start in range(0, n, band):
        total += read_rows(st, name, start, min(start + band, n)).sum(axis=0, dtype=np.float64)
    return total / n


def _band_rows(st: Store, name: str, band_size: int | None) -> int:
    chunk = array_chunks(st, name)[0]
    if band_size is not None:
        return check_int(band_size, "band_size", minimum=1)
    d = array_shape(st, name)[1]
    rows = max(1, DEFAULT_BAND_BYTES // (d * 8))
    return max(chunk, rows // chunk * chunk)


def _embedding_dims(st: Store, descriptor: str) -> list[int]:
    """Dimensions ``k`` of the stored ``embeddings/<d>/d<k>``, ascending."""
    try:
        group = st.group[f"embeddings/{descriptor}"]
    except KeyError:
        return []
    dims = []
    for key in group.array_keys():
        if key.startswith("d") and key[1:].isdigit():
            dims.append(int(key[1:]))
    return sorted(dims)


def similar(
    image: str | os.PathLike[str],
    store: Store | str | os.PathLike[str],
    *,
    k: int = 10,
    descriptor: str = "cnn",
    page: int = 0,
    weights: str | Path | VGGWeights = DEFAULT_WEIGHTS,
    device: str | None = None,
    batch_size: int = 8,
    band_size: int | None = None,
    precision: str = "mixed",
    place: bool = True,
    n_refine: int = 50,
    max_pixels: int = 2**28,
) -> SimilarResult:
    """The ``k`` archive images nearest to a micrograph by texture, and its place in the map.

    See the module docstring for the method.

    Parameters
    ----------
    image : path
        The query micrograph (not necessarily in the archive).
    store : path or Store
        A store the pipeline has filled: ``image_features/<descriptor>`` complete, and
        (with ``place``) at least one ``embeddings/<descriptor>/d<k>``.
    k : int, optional
        Neighbours to return (at most the number of images).
    descriptor : {"cnn", "ps"}, optional
    page : int, optional
        Page of a multi-page query file.
    weights : str, Path or VGGWeights, optional
        VGG-19 weights (``"cnn"``): the ones the store records (by sha256).
    device : str, optional
        Torch device of the network and of the distance kernel; default the GPU when
        there is one.
    batch_size : int, optional
        Tiles per forward pass.
    band_size : int, optional
        Archive images read at once; default as many as fit in 256 MiB of float64 (a
        multiple of the array's chunk rows). Memory is about ``band_size * d * 8`` bytes
        plus ``O(n)``.
    precision : {"mixed", "float64"}, optional
        Precision of the distance kernel (:func:`~microscale.distance.block_sq_distances`).
    place : bool, optional
        Place the query into every stored embedding (default).
    n_refine : int, optional
        Guttman steps of the placement (:func:`~microscale.landmark.out_of_sample`).
    max_pixels : int, optional
        As in :func:`microscale.ingest.ingest_archive`.

    Returns
    -------
    SimilarResult
        Ranked neighbours and the query's positions; ``.to_dataset()`` labels them.

    Raises
    ------
    IncompleteStageError
        If the store lacks complete image features, or (with ``place``) any embedding.
    WeightsMismatchError
        If ``weights`` are not the store's.
    ValueError
        For an invalid option, or a query that cannot be prepared like the archive's files.

    Examples
    --------
    >>> res = similar("new.tif", "microscale-store", k=5)  # doctest: +SKIP
    >>> res.rows()[0]["path"], res.positions[2]  # doctest: +SKIP
    """
    from microscale.distance import block_sq_distances, row_sq_norms

    descriptor = check_one_of(descriptor, "descriptor", DESCRIPTORS)
    k = check_int(k, "k", minimum=1)
    st = _open(store)
    name = _require_image_features(st, descriptor)
    n = st.n_images
    dims = _embedding_dims(st, descriptor) if place else []
    if place and not dims:
        raise IncompleteStageError(
            f"The store {st.root} has no {descriptor!r} embedding to place the query in; run "
            f"`microscale run ARCHIVE --store {st.root}` (its embed stage) first, or pass "
            "place=False."
        )
    band = _band_rows(st, name, band_size)
    q = query_vector(
        image,
        st,
        descriptor=descriptor,
        page=page,
        weights=weights,
        device=device,
        batch_size=batch_size,
        max_pixels=max_pixels,
    )
    center = _center(st, descriptor, name, n, band)
    q_norm = row_sq_norms(q.vector[None], center=center, precision=precision, device=device)
    dist = np.empty(n)
    norms = np.empty(n)  # |f_j - c|**2: the triangulation's column means come from them
    for start in range(0, n, band):
        stop = min(start + band, n)
        rows = read_rows(st, name, start, stop)
        norms[start:stop] = row_sq_norms(rows, center=center, precision=precision, device=device)
        d2 = block_sq_distances(
            q.vector[None],
            rows,
            center=center,
            x_sq_norms=q_norm,
            y_sq_norms=norms[start:stop],
            precision=precision,
            device=device,
        )
        dist[start:stop] = np.sqrt(d2[0])
        del rows, d2
    if q.archive_index is not None:
        dist[q.archive_index] = 0.0  # the kernel's diagonal: exactly 0 for itself
    order = np.argsort(dist, kind="stable")[: min(k, n)]  # ties: lower index first
    rows_of = [image_table(st, int(i), int(i) + 1) for i in order]  # k small reads, not n
    positions: dict[int, np.ndarray] = {}
    placement: dict[int, float] = {}
    if dims:
        from scipy.spatial.distance import cdist

        from microscale.landmark import out_of_sample

        for dim in dims:
            Y = read_array(st, f"embeddings/{descriptor}/d{dim}")
            m = min(len(Y), n)
            Y = Y[:m]
            if q.archive_index is not None and q.archive_index < m:
                x = Y[q.archive_index].copy()  # its place is known: no placement
            else:
                delta_mean = norms.mean() + norms if m == n else None
                x = out_of_sample(dist[None, :m], Y, delta_mean=delta_mean, n_refine=n_refine)[0]
            fit = cdist(x[None], Y)[0]
            denom = float(np.dot(dist[:m], dist[:m]))
            placement[dim] = (
                math.sqrt(float(np.sum((dist[:m] - fit) ** 2)) / denom) if denom else 0.0
            )
            positions[dim] = x
    query = os.fspath(image) if page == 0 and "#" not in q.image_id else f"{image}#{page}"
    return SimilarResult(
        query=query,
        query_id=q.image_id,
        descriptor=descriptor,
        in_archive=q.archive_index,
        indices=order.astype(np.int64),
        image_ids=np.array([str(t["image_id"][0]) for t in rows_of], dtype=object),
        paths=np.array([str(t["image_path"][0]) for t in rows_of], dtype=object),
        distances=dist[order],
        positions=positions,
        placement_stress=placement,
        n_images=n,
        sketch=_sketch_spec(array_attrs(st, name)),
    )
