"""The labelled results: one xarray Dataset schema, written to Zarr and netCDF.

This is the only module that builds labels. Everything upstream works on plain arrays;
:func:`build_dataset` turns them into a :class:`xarray.Dataset` with CF-style attributes:

- ``embedding`` (descriptor, n_components, image, component): MDS coordinates, NaN where
  component >= n_components;
- ``stress`` (descriptor, n_components): Kruskal stress-1;
- ``image_data`` (image, y, x): the images, optional;
- per-image parameters (theta, k, A, paths, ...) as coordinates on ``image``;
- further metric variables with whatever dims the caller labels (r2, rmse, ...).

Provenance (weights sha256, package versions, all parameters) is stored in the attributes;
nested values are JSON strings so that netCDF can hold them.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "build_angle_dataset",
    "build_dataset",
    "build_stress_curves",
    "build_synthesis_dataset",
    "describe_map",
    "MAP_ATTRIBUTES",
    "provenance",
    "read_dataset",
    "write_dataset",
]

_PACKAGES = ("microscale", "numpy", "scipy", "scikit-learn", "torch", "xarray", "zarr")


def provenance(
    *, parameters: Mapping[str, Any] | None = None, weights_sha256: str | None = None
) -> dict[str, Any]:
    """Attributes that say how a result was made.

    Parameters
    ----------
    parameters : mapping, optional
        Every parameter of the run (image size, normalisation, layers, seeds, ...).
    weights_sha256 : str, optional
        sha256 of the normalised VGG-19 pickle the texture vectors came from.

    Returns
    -------
    dict
        Flat attributes: ``created``, ``host``, ``versions`` (JSON), ``parameters`` (JSON),
        ``weights_sha256``.
    """
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    attrs: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()} ({platform.machine()}, Python {platform.python_version()})",
        "versions": json.dumps(versions, sort_keys=True),
        "parameters": json.dumps(dict(parameters or {}), sort_keys=True, default=_jsonable),
    }
    if weights_sha256 is not None:
        attrs["weights_sha256"] = weights_sha256
    return attrs


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def build_dataset(
    *,
    embeddings: Mapping[str, Mapping[int, np.ndarray]],
    stress: Mapping[str, Mapping[int, float]] | None = None,
    params: Mapping[str, np.ndarray] | None = None,
    images: np.ndarray | None = None,
    image_ids: Sequence[str] | None = None,
    metrics: Mapping[str, tuple[Sequence[str], np.ndarray, Mapping[str, Any]]] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build the labelled result Dataset.

    Parameters
    ----------
    embeddings : mapping descriptor -> (mapping n_components -> (n, n_components) array)
        MDS coordinates for each descriptor ("cnn", "ps") and dimension.
    stress : mapping descriptor -> (mapping n_components -> float), optional
        Kruskal stress-1 of each embedding.
    params : mapping name -> (n,) array, optional
        Per-image generating parameters or metadata, stored as coordinates on ``image``.
    images : (n, H, W) array, optional
        The images themselves, stored as ``image_data``.
    image_ids : sequence of str, optional
        Labels of the ``image`` dimension (file paths, hashes); default 0..n-1.
    metrics : mapping name -> (dims, values, attrs), optional
        Further variables, e.g. ``{"r2": (("descriptor", "n_components", "parameter"), arr,
        {"long_name": "..."})}``.
    coords : mapping, optional
        Coordinates for dimensions used by ``metrics`` (e.g. ``parameter``).
    attrs : mapping, optional
        Global attributes, typically :func:`provenance`.

    Returns
    -------
    xarray.Dataset
    """
    methods = list(embeddings)
    if not methods:
        raise ValueError("The 'embeddings' mapping is empty: pass at least one method.")
    dims = sorted({int(d) for per in embeddings.values() for d in per})
    sizes = {np.asarray(x).shape[0] for per in embeddings.values() for x in per.values()}
    if len(sizes) != 1:
        raise ValueError(f"Embeddings disagree on the number of images: {sorted(sizes)}.")
    n = sizes.pop()
    width = max(dims)
    emb = np.full((len(methods), len(dims), n, width), np.nan)
    for i, method in enumerate(methods):
        for j, d in enumerate(dims):
            if d in embeddings[method]:
                x = np.asarray(embeddings[method][d], dtype=np.float64)
                if x.shape != (n, d):
                    raise ValueError(
                        f"Embedding {method!r} at n_components={d} has shape {x.shape}; "
                        f"expected {(n, d)}."
                    )
                emb[i, j, :, :d] = x
    data_vars: dict[str, Any] = {
        "embedding": (
            ("descriptor", "n_components", "image", "component"),
            emb,
            {
                "long_name": "metric MDS coordinates, in units of the texture distance",
                "units": "1",
                "description": "NaN where component >= n_components",
            },
        )
    }
    if stress is not None:
        st = np.full((len(methods), len(dims)), np.nan)
        for i, method in enumerate(methods):
            for j, d in enumerate(dims):
                st[i, j] = stress.get(method, {}).get(d, np.nan)
        data_vars["stress"] = (
            ("descriptor", "n_components"),
            st,
            {"long_name": "Kruskal stress-1", "units": "1"},
        )
    if images is not None:
        images = np.asarray(images)
        if len(images) != n:
            raise ValueError(f"{len(images)} images were given for {n} embedded points.")
        data_vars["image_data"] = (("image", "y", "x"), images, {"long_name": "image"})
    for name, (mdims, values, mattrs) in (metrics or {}).items():
        data_vars[name] = (tuple(mdims), np.asarray(values), dict(mattrs))
    all_coords: dict[str, Any] = {
        "descriptor": methods,
        "n_components": dims,
        "component": np.arange(width),
        "image": list(image_ids) if image_ids is not None else np.arange(n),
    }
    for name, values in (params or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"Parameter {name!r} has shape {values.shape}; expected ({n},).")
        all_coords[name] = ("image", values)
    all_coords.update(coords or {})
    ds = xr.Dataset(data_vars, coords=all_coords, attrs=dict(attrs or {}))
    ds.attrs.setdefault("Conventions", "CF-1.10")
    return ds


def build_angle_dataset(
    *,
    rmse: np.ndarray,
    stress: np.ndarray,
    embedding_2d: np.ndarray,
    theta: np.ndarray,
    descriptors: Sequence[str],
    amplitudes: Sequence[float],
    n_images: Sequence[int],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The angle task's metrics (Lubbers et al. 2017, Sec. IV B).

    Parameters
    ----------
    rmse, stress : (descriptor, A, n_images, trial) arrays
        Angle-reconstruction RMSE (Eq. 10) and stress-1 of the 2-D embeddings.
    embedding_2d : (descriptor, A, image, 2) array
        The 2-D embeddings of trial 0 at the first N, for figures.
    theta : (image,) array
        Orientations of those images.
    descriptors, amplitudes, n_images : sequences
        Coordinate labels.
    attrs : mapping, optional
        Global attributes.
    """
    dims = ("descriptor", "A", "n_images", "trial")
    return xr.Dataset(
        {
            "rmse": (
                dims,
                rmse,
                {"long_name": "angle reconstruction RMSE (Eq. 10)", "units": "rad"},
            ),
            "stress": (dims, stress, {"long_name": "Kruskal stress-1 at D*=2", "units": "1"}),
            "embedding_2d": (
                ("descriptor", "A", "image", "component"),
                embedding_2d,
                {"long_name": "2-D MDS embedding of trial 0 at the first N"},
            ),
        },
        coords={
            "descriptor": list(descriptors),
            "A": list(amplitudes),
            "n_images": list(n_images),
            "trial": np.arange(rmse.shape[-1]),
            "theta": ("image", np.asarray(theta), {"units": "rad"}),
            "component": np.arange(embedding_2d.shape[-1]),
        },
        attrs={"Conventions": "CF-1.10", **dict(attrs or {})},
    )


def build_stress_curves(
    *,
    stress: np.ndarray,
    descriptors: Sequence[str],
    amplitudes: Sequence[float],
    n_components: Sequence[int],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Stress-1 against embedding dimension, ``stress`` of shape (descriptor, A, n_components)."""
    return xr.Dataset(
        {
            "stress": (
                ("descriptor", "A", "n_components"),
                stress,
                {"long_name": "Kruskal stress-1"},
            )
        },
        coords={
            "descriptor": list(descriptors),
            "A": list(amplitudes),
            "n_components": list(n_components),
        },
        attrs={"Conventions": "CF-1.10", **dict(attrs or {})},
    )


def build_synthesis_dataset(
    *,
    original: np.ndarray,
    synthesized: np.ndarray,
    loss: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Texture synthesis: the (y, x) original and synthesised images in [0, 1], loss per step."""
    return xr.Dataset(
        {
            "original": (("y", "x"), original),
            "synthesized": (("y", "x"), synthesized),
            "loss": (("step",), loss, {"long_name": "texture loss L(x, x_orig)"}),
        },
        coords={"step": np.arange(len(loss))},
        attrs={"Conventions": "CF-1.10", **dict(attrs or {})},
    )


def write_dataset(ds: xr.Dataset, path: str | Path) -> tuple[Path, Path]:
    """Write ``ds`` as ``PATH.zarr`` (Zarr v3) and ``PATH.nc`` (netCDF-4).

    Returns
    -------
    (Path, Path)
        The Zarr store and the netCDF file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    zarr_path, nc_path = path.with_suffix(".zarr"), path.with_suffix(".nc")
    # Fixed-width numpy strings have no Zarr v3 specification; variable-length ones do.
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    ds.to_zarr(zarr_path, mode="w", zarr_format=3, consolidated=False)
    ds.to_netcdf(nc_path, engine="h5netcdf", invalid_netcdf=False)
    return zarr_path, nc_path


def read_dataset(path: str | Path) -> xr.Dataset:
    """Open a result written by :func:`write_dataset` (``.zarr`` or ``.nc``)."""
    path = Path(path)
    if path.suffix == ".zarr":
        return xr.open_zarr(path, consolidated=False)
    return xr.open_dataset(path, engine="h5netcdf")


#: CF ``long_name`` and ``units`` of the map's coordinates and variables (:func:`describe_map`).
#: Embedding coordinates and neighbour distances are in the units of the texture distance
#: (the Euclidean distance between texture vectors, docs/method.md), written "1".
MAP_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "descriptor": ("texture descriptor: cnn (VGG-19 Gram matrices) or ps (power spectrum)", "1"),
    "n_components": ("embedding dimension D*", "1"),
    "component": ("index of the MDS coordinate, from 0", "1"),
    "image": ("image identity: sha256 of the file's content (#p<page> for a page)", "1"),
    "image_path": ("path of the image relative to the archive", "1"),
    "pixel_size_nm": ("physical size of a pixel", "nm"),
    "theta": ("orientation of the stripes' wave vector", "rad"),
    "k": ("wave number: stripes per image side", "1"),
    "A": ("noise amplitude", "1"),
    "rank": ("rank of a neighbour, nearest first", "1"),
    "parameter": ("ground-truth parameter a linear map is fitted to", "1"),
    "file": ("input file, relative to the archive", "1"),
    "tile": ("tile index", "1"),
    "embedding": ("metric MDS coordinates, in units of the texture distance", "1"),
    "stress": ("Kruskal stress-1", "1"),
    "neighbor": ("nearest neighbours (positions along 'image')", "1"),
    "neighbor_distance": ("texture distance to the nearest neighbours", "1"),
    "outlier_score": ("outlier score: texture distance to the k-th nearest neighbour", "1"),
    "cluster": ("cluster label (-1: noise)", "1"),
    "cluster_n_components": ("MDS dimension D* the clusters were found in", "1"),
    "r2": ("R^2 of a linear map from the embedding to a parameter (Eq. 13)", "1"),
    "regression_angle": ("angle between beta_A and beta_k (Eq. 14)", "degree"),
    "file_status": ("outcome of each input file: processed, skipped or failed", "1"),
    "file_reason": ("why a file was skipped or failed", "1"),
}


def describe_map(ds: xr.Dataset, *, history: str | None = None) -> xr.Dataset:
    """Give every coordinate and variable CF ``long_name`` and ``units``, and the Dataset
    ``source`` and ``history`` global attributes. Attributes already set are kept.

    Names not in :data:`MAP_ATTRIBUTES` get their own name as ``long_name`` and units
    ``"1"`` (dimensionless), so nothing is left undescribed. ``history`` is one line,
    prefixed with the time (default: "created by microscale <version>").

    Examples
    --------
    >>> ds = describe_map(xr.Dataset(coords={"theta": ("image", [0.5])}))
    >>> ds.theta.attrs["units"], ds.attrs["source"].startswith("microscale")
    ('rad', True)
    """
    import datetime

    from microscale import __version__

    ds = ds.copy()
    for name in [*ds.coords, *ds.data_vars]:
        long_name, units = MAP_ATTRIBUTES.get(str(name), (str(name), "1"))
        attrs = ds[name].attrs
        attrs.setdefault("long_name", long_name)
        attrs.setdefault("units", units)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    line = f"{now}: {history or f'created by microscale {__version__}'}"
    previous = ds.attrs.get("history")
    ds.attrs["history"] = f"{previous}\n{line}" if previous else line
    ds.attrs.setdefault(
        "source",
        f"microscale {__version__}: Gram-matrix texture vectors of a normalised VGG-19 and "
        "power spectra, exact distances, metric MDS (Lubbers et al., PRE 96, 052111, 2017)",
    )
    return ds
