"""The archive map: embed a store's distance matrices and label the result.

:func:`map_store` is the final reduction of the pipeline. For each descriptor it runs the
library's MDS on the store's (n, n) matrix (:func:`microscale.stages.embed.embed`, which starts
from the previous map when the archive grew), evaluates the map against ground truth when
the archive has generating parameters (a ``parameters.csv`` sidecar, as the demo archive
and the paper's datasets do), and returns one labelled Dataset
(:func:`microscale.results.build_dataset`) with per-image paths and pixel sizes, the
outcome of every input file, and provenance. Each image also gets its nearest
neighbours, an outlier score and a cluster label (:mod:`microscale.neighbors`).
:func:`write_map` writes it as Zarr and netCDF next to a PNG of the map, a self-contained
interactive HTML map (:mod:`microscale.interactive`) and, for archives without ground
truth, a thumbnail montage of the map's regions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from microscale import evaluate, neighbors, store
from microscale._validation import renamed
from microscale.results import build_dataset, describe_map, provenance, write_dataset
from microscale.stages import embed as embed_stage

__all__ = ["cluster_dimension", "ground_truth", "map_store", "write_map"]

PARAMETER_NAMES = ("theta", "k", "A")

#: Stress-1 below which an embedding is good enough to cluster ("fair", Kruskal 1964).
CLUSTER_STRESS = 0.1


def cluster_dimension(stress: dict[int, float]) -> int:
    """The embedding dimension the clusters are found in.

    The smallest D* whose Kruskal stress-1 is at most :data:`CLUSTER_STRESS` (0.1): the
    fewest coordinates that keep the distances, so that density is measured where the
    map is faithful and the curse of dimensionality does not flatten it; the largest
    D* when none is that good.
    """
    good = [k for k in sorted(stress) if np.isfinite(stress[k]) and stress[k] <= CLUSTER_STRESS]
    return good[0] if good else max(stress)


def _neighborhood(
    root: str | os.PathLike[str],
    embeddings: dict[str, dict[int, np.ndarray]],
    stresses: dict[str, dict[int, float]],
    *,
    level: str,
    n_neighbors: int,
    modes: dict[str, str] | None = None,
) -> tuple[dict[str, tuple], dict[str, Any]]:
    """Neighbours, outlier scores and clusters of every descriptor, as labelled variables.

    The neighbours come from the full matrix, or in the ``"landmarks"`` distance mode
    (``modes[d]``) from the streamed ``neighbors/<d>`` arrays: the same exact result.
    """
    descriptors = list(embeddings)
    n = len(next(iter(embeddings[descriptors[0]].values())))
    k = min(int(n_neighbors), n - 1)
    idx = np.empty((len(descriptors), n, k), dtype=np.int64)
    dist = np.empty((len(descriptors), n, k), dtype=np.float64)
    labels = np.empty((len(descriptors), n), dtype=np.int64)
    dims = sorted(next(iter(embeddings.values())))
    kept = np.full((len(descriptors), len(dims)), np.nan)
    used = []
    for i, d in enumerate(descriptors):
        if (modes or {}).get(d) == "landmarks":
            idx[i], dist[i] = neighbors.stored_neighbors(root, descriptor=d, level=level, k=k)
        else:
            idx[i], dist[i] = neighbors.nearest_neighbors(root, descriptor=d, level=level, k=k)
        dim = cluster_dimension(stresses[d])
        labels[i] = neighbors.clusters(embeddings[d][dim])
        used.append(dim)
        for j, dk in enumerate(dims):
            kept[i, j] = neighbors.knn_preservation(idx[i], embeddings[d][dk])
    where = f"{level}s"
    variables = {
        "neighbor": (
            ("descriptor", "image", "rank"),
            idx,
            {
                "long_name": "nearest neighbours",
                "description": f"positions along 'image' of the {k} nearest other {where} in "
                "the descriptor's distance matrix, nearest first; ties go to the lower index",
            },
        ),
        "neighbor_distance": (
            ("descriptor", "image", "rank"),
            dist,
            {
                "long_name": "distance to the nearest neighbours",
                "description": "texture distance to each 'neighbor', non-decreasing in rank",
            },
        ),
        "outlier_score": (
            ("descriptor", "image"),
            dist[:, :, -1].copy(),
            {
                "long_name": "outlier score",
                "description": f"distance to the {k}-th nearest other {level} (Ramaswamy et "
                "al. 2000, doi:10.1145/342009.335437); larger is more unusual",
                "n_neighbors": k,
            },
        ),
        "cluster": (
            ("descriptor", "image"),
            labels,
            {
                "long_name": "cluster label",
                "description": "HDBSCAN (Campello et al. 2013) of the MDS map at "
                "'cluster_n_components' dimensions; -1 is noise (in no cluster), "
                "clusters are numbered by decreasing size",
            },
        ),
        "cluster_n_components": (
            ("descriptor",),
            np.array(used, dtype=np.int64),
            {"long_name": "MDS dimension D* the clusters were found in"},
        ),
        "knn_preservation": (
            ("descriptor", "n_components"),
            kept,
            {
                "long_name": "k-NN preservation",
                "description": f"fraction of each {level}'s {k} nearest neighbours by texture "
                f"distance that are among its {k} nearest in the map, averaged; 1 is perfect",
                "n_neighbors": k,
            },
        ),
    }
    return variables, {"rank": np.arange(1, k + 1)}


def ground_truth(archive: str | os.PathLike[str] | None, paths: Sequence[str]) -> dict | None:
    """Generating parameters of each image from the archive's ``parameters.csv``, or None.

    Images the sidecar does not list get NaN.
    """
    if archive is None or not (Path(archive) / "parameters.csv").is_file():
        return None
    from microscale.demo import read_parameters

    table = read_parameters(archive)
    out = {name: np.full(len(paths), np.nan) for name in PARAMETER_NAMES}
    for i, path in enumerate(paths):
        row = table.get(path)
        if row is not None:
            for name in PARAMETER_NAMES:
                out[name][i] = row[name]
    return out if np.isfinite(out["k"]).any() else None


def _metrics(
    embeddings: dict[str, dict[int, np.ndarray]], truth: dict[str, np.ndarray], dims: list[int]
) -> dict[str, tuple]:
    known = np.isfinite(truth["k"])
    targets = {
        "k": truth["k"],
        "A": truth["A"],
        "cos_2theta": np.cos(2 * truth["theta"]),
        "sin_2theta": np.sin(2 * truth["theta"]),
    }
    descriptors = list(embeddings)
    r2 = np.full((len(descriptors), len(dims), len(targets)), np.nan)
    angle = np.full((len(descriptors), len(dims)), np.nan)
    if known.sum() < 4:
        return {}
    for i, d in enumerate(descriptors):
        for j, k in enumerate(dims):
            x = embeddings[d][k][known]
            for t, y in enumerate(targets.values()):
                r2[i, j, t] = evaluate.r_squared(x, y[known])
            angle[i, j] = evaluate.regression_angle(x, truth["A"][known], truth["k"][known])
    return {
        "r2": (
            ("descriptor", "n_components", "parameter"),
            r2,
            {"long_name": "R^2 of a linear map from the embedding to a parameter (Eq. 13)"},
        ),
        "regression_angle": (
            ("descriptor", "n_components"),
            angle,
            {"long_name": "angle between beta_A and beta_k (Eq. 14)", "units": "degree"},
        ),
        "_parameter": list(targets),
    }


def map_store(
    root: str | os.PathLike[str],
    *,
    descriptors: Sequence[str] = ("cnn", "ps"),
    n_components: Sequence[int] | None = None,
    archive: str | os.PathLike[str] | None = None,
    random_state: int = 0,
    device: str | None = None,
    parameters: dict[str, Any] | None = None,
    on_descriptor: Callable[[str], None] | None = None,
    level: str = "image",
    n_neighbors: int = neighbors.DEFAULT_K,
    landmarks: int | None = None,
    max_dense: int = embed_stage.DENSE_LIMIT,
    dims: Sequence[int] | None = None,
    distances: str | None = None,
    stress_sample: int = embed_stage.DEFAULT_STRESS_SAMPLE,
) -> xr.Dataset:
    """Embed every descriptor's distance matrix and build the labelled map.

    Parameters
    ----------
    root : path
        Store whose distance stage is complete.
    descriptors : sequence of str
        ``"cnn"`` and/or ``"ps"``.
    n_components : sequence of int, optional
        MDS dimensions (those >= the number of images are dropped); default 1 .. 10.
    archive : path, optional
        The archive, to find a ``parameters.csv`` with ground truth.
    random_state, device : optional
        Passed to the MDS.
    parameters : dict, optional
        Run parameters recorded in the provenance.
    on_descriptor : callable, optional
        Called with each descriptor after it is embedded.
    level : {"image", "tile"}, optional
        Map images (default) or every tile; a tile's id is ``<image id>@<row>,<col>``.
    n_neighbors : int, optional
        Neighbours kept per image, and the rank of the outlier score (default 5; at most
        n - 1).
    landmarks, max_dense : optional
        Landmark MDS with ``landmarks`` landmarks, or when there are more than
        ``max_dense`` images; see :func:`microscale.stages.embed.embed`. The method used is
        recorded in the attributes ``mds_method`` and ``mds_landmarks`` (per descriptor).
    dims : sequence of int, optional
        The old name of ``n_components`` (a FutureWarning; removed in the next release).
    distances : {"full", "landmarks"}, optional
        The distance mode (default by size, ``max_dense``); recorded in the attribute
        ``distances`` (per descriptor). In the ``"landmarks"`` mode the neighbours are
        the stored streamed ones and the stress is estimated from ``stress_sample``
        images: attributes ``stress_method`` ("exact" or "sampled"), ``stress_interval``
        ({descriptor: {D*: [low, high]}}, 95 %) and ``stress_pairs``.
    stress_sample : int, optional
        See :func:`microscale.stages.embed.embed`.

    Returns
    -------
    xarray.Dataset
        :func:`microscale.results.build_dataset` schema, plus ``image_path``,
        ``pixel_size_nm``, ``crop_rows`` (info-bar rows cut, -1 when not recorded),
        ``crop_edge`` (``"bottom"``, ``"top"``, ``"top+bottom"`` or ``""``), ``crop_source``
        (how the bar was found, :func:`microscale.io.info_bar`; ``""`` when not recorded)
        and ground-truth coordinates on ``image``, ``r2`` and
        ``regression_angle`` when there is ground truth, ``file_status`` /
        ``file_reason`` (a file's first outcome while it is unchanged) and
        ``file_last_seen`` on a ``file`` dimension, the attribute ``mds_unchanged``
        (JSON: descriptor -> whether its embeddings were the stored ones), and from
        :mod:`microscale.neighbors`:
        ``neighbor`` (descriptor, image, rank) int64 positions along ``image``,
        ``neighbor_distance`` (descriptor, image, rank), ``outlier_score``
        (descriptor, image), ``cluster`` (descriptor, image) int64 (-1 noise) and
        ``cluster_n_components`` (descriptor,), ``knn_preservation`` (descriptor,
        n_components; also the attribute of that name).
    """
    dims = renamed(n_components, dims, new_name="n_components", old_name="dims", caller="map_store")
    if dims is None:
        dims = range(1, 11)
    st = store.open_store(root, mode="r")
    n = st.n_images if level == "image" else st.n_tiles
    dims = sorted({int(k) for k in dims if 0 < k < n})
    if not dims:
        raise ValueError(f"The store holds {n} {level}(s): too few to embed; add images.")
    embeddings, stresses, res, methods, unchanged, quality = {}, {}, {}, {}, {}, {}
    for d in descriptors:
        res = embed_stage.embed(
            root,
            descriptor=d,
            n_components=dims,
            random_state=random_state,
            device=device,
            level=level,
            landmarks=landmarks,
            max_dense=max_dense,
            distances=distances,
            stress_sample=stress_sample,
        )
        embeddings[d], stresses[d] = res["embeddings"], res["stress"]
        methods[d] = (res["method"], res["n_landmarks"])
        unchanged[d] = bool(res["unchanged"])
        quality[d] = res
        if on_descriptor is not None:
            on_descriptor(d)
    paths = [str(p) for p in res["image_paths"]]
    table = store.image_table(st)
    pixel_size = np.asarray(table["pixel_size_nm"], dtype=np.float64)
    crop = _crop_columns(table["crop_rows"], table["crop_source"])
    if level == "tile":
        tiles = store.tile_table(st)
        pixel_size = pixel_size[tiles["tile_image"]]
        crop = {k: v[tiles["tile_image"]] for k, v in crop.items()}
    truth = ground_truth(archive, paths)
    params = {
        "image_path": np.array(paths, dtype=object),
        "pixel_size_nm": pixel_size,
        **crop,
    }
    if level == "tile":
        params["tile_origin_y"] = tiles["tile_origin"][:, 0]
        params["tile_origin_x"] = tiles["tile_origin"][:, 1]
    modes = {d: r["distances"] for d, r in quality.items()}
    metrics, coords = _neighborhood(
        root, embeddings, stresses, level=level, n_neighbors=n_neighbors, modes=modes
    )
    if truth is not None:
        params.update(truth)
        found = _metrics(embeddings, truth, dims)
        if found:
            coords["parameter"] = found.pop("_parameter")
            metrics.update(found)
    manifest = store.read_manifest(st)
    files = sorted(manifest["files"])
    coords["file"] = np.array(files, dtype=object)
    metrics["file_status"] = (
        ("file",),
        np.array([manifest["files"][f]["status"] for f in files], dtype=object),
        {"long_name": "outcome of each input file: processed, skipped or failed"},
    )
    metrics["file_reason"] = (
        ("file",),
        np.array([manifest["files"][f].get("reason", "") for f in files], dtype=object),
        {"long_name": "why a file was skipped or failed"},
    )
    metrics["file_last_seen"] = (
        ("file",),
        np.array([manifest["files"][f].get("last_seen", "") for f in files], dtype=object),
        {"long_name": "when a run last found the file (UTC, ISO 8601; empty: not recorded)"},
    )
    attrs = provenance(parameters={**st.attrs.get("ingest", {}), **(parameters or {})})
    if "cnn" in descriptors and store.has_array(st, "features/cnn"):
        stored = store.array_attrs(st, "features/cnn")
        attrs["weights_sha256"] = str(stored.get("weights_sha256"))
        # what the store holds, whatever this run's parameters say
        attrs["sketch"] = json.dumps(stored.get("sketch"))
        attrs["texture_precision"] = str(stored.get("precision", "float32"))
    attrs["mds_method"] = json.dumps({d: m for d, (m, _) in methods.items()})
    attrs["mds_landmarks"] = json.dumps({d: m for d, (_, m) in methods.items()})
    # per descriptor: the embeddings are the stored ones, not recomputed (nothing new)
    attrs["mds_unchanged"] = json.dumps(unchanged)
    attrs["distances"] = json.dumps(modes)
    attrs["stress_method"] = json.dumps({d: r["stress_method"] for d, r in quality.items()})
    sampled = {d: r for d, r in quality.items() if r["stress_method"] == "sampled"}
    if sampled:
        attrs["stress_interval"] = json.dumps(
            {
                d: {str(k): list(v) for k, v in r["stress_interval"].items()}
                for d, r in sampled.items()
            }
        )
        attrs["stress_pairs"] = json.dumps({d: r["stress_pairs"] for d, r in sampled.items()})
    kept = metrics["knn_preservation"][1]
    attrs["knn_preservation"] = json.dumps(
        {d: {str(k): round(float(kept[i, j]), 4) for j, k in enumerate(dims)}
         for i, d in enumerate(embeddings)}
    )  # fmt: skip
    attrs["title"] = f"microscale texture map ({level} level)"
    attrs["level"] = level
    attrs["store"] = str(Path(root).resolve())
    ds = build_dataset(
        embeddings=embeddings,
        stress=stresses,
        params=params,
        image_ids=[str(i) for i in res["image_ids"]],
        metrics=metrics,
        coords=coords,
        attrs=attrs,
    )
    return describe_map(ds, history=f"microscale map of {attrs['store']} ({level} level)")


def _crop_columns(rows: np.ndarray, sources: np.ndarray) -> dict[str, np.ndarray]:
    """``crop_rows``, ``crop_edge`` and ``crop_source`` per image from the store's table."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    known = (rows >= 0).all(axis=1)
    edge = [
        "+".join(e for e, n in zip(("top", "bottom"), r, strict=True) if n > 0) if ok else ""
        for r, ok in zip(rows.tolist(), known, strict=True)
    ]
    return {
        "crop_rows": np.where(known, rows.sum(axis=1), -1),
        "crop_edge": np.array(edge, dtype=object),
        "crop_source": np.asarray(sources, dtype=object),
    }


def _thumbnails(ds: xr.Dataset, st: store.Store) -> Callable[[int], np.ndarray]:
    """``thumbnail(i)``: the first tile of image ``i`` (tile ``i`` of a tile-level map).

    Reads whole chunks of tiles and keeps the last one, so that calls in increasing ``i``
    read each chunk once.
    """
    if ds.attrs.get("level") == "tile":
        rows = np.arange(ds.sizes["image"])
    else:  # an image's thumbnail is its first tile
        rows = store.image_table(st)["image_tiles"][:, 0]
    chunk = st.tiles_per_chunk
    cache: dict[int, np.ndarray] = {}

    def thumbnail(i: int) -> np.ndarray:
        row = int(rows[i])
        start = row - row % chunk
        if start not in cache:
            cache.clear()
            cache[start] = store.read_tiles(st, start, min(start + chunk, st.n_tiles))
        return cache[start][row - start]

    return thumbnail


def write_map(
    ds: xr.Dataset,
    root: str | os.PathLike[str],
    *,
    max_thumbnails: int = 2000,
    thumbnail_size: int = 64,
) -> list[Path]:
    """Write the map and its figures under ``ROOT/results``.

    ``map.zarr`` and ``map.nc`` (``tile_map.*`` for a tile-level map), ``map.png``, the
    stress against dimension, ``map.html`` (the interactive map of
    :func:`microscale.interactive.write_interactive_map`, with ``max_thumbnails``
    thumbnails of ``thumbnail_size`` px) and, for an archive without ground truth, a
    thumbnail montage of the map's regions.

    Returns
    -------
    list of Path
        The files written.
    """
    from microscale import interactive, plots

    out = Path(root) / "results"
    stem = "map" if ds.attrs.get("level", "image") == "image" else "tile_map"
    files = list(write_dataset(ds, out / stem))
    files.append(plots.plot_map(ds, out / f"{stem}.png"))
    files.append(plots.plot_stress_vs_dimension(ds, out / f"{stem}_stress_vs_dimension.png"))
    st = store.open_store(root, mode="r")
    files.append(
        interactive.write_interactive_map(
            ds,
            out / f"{stem}.html",
            thumbnail=_thumbnails(ds, st),
            max_thumbnails=max_thumbnails,
            thumbnail_size=thumbnail_size,
        )
    )
    if "k" not in ds.coords and ds.sizes["image"] >= 4 and 2 in ds.n_components:
        files.append(plots.plot_montage(ds, _thumbnails(ds, st), out / f"{stem}_montage.png"))
    return files
