"""The summary of a map: the numbers a run reports, and the markdown the flow publishes.

:func:`map_summary` reduces the labelled map (:func:`microscale.mapping.map_store`) to a
small JSON-able dict: stress per dimension, the interactive page, the most unusual images,
the cluster counts and, with ground truth, R^2. :func:`summary_markdown` renders it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["map_summary", "result_link", "summary_markdown"]


def map_summary(ds: xr.Dataset, files: list[Path]) -> dict[str, Any]:
    """Stress, outliers, clusters and R^2 of a map, rounded for reports.

    Parameters
    ----------
    ds : xarray.Dataset
        The map, as :func:`microscale.mapping.map_store` returns it.
    files : list of Path
        What :func:`microscale.mapping.write_map` wrote (the HTML page is linked).

    Returns
    -------
    dict
        ``n_images``, ``stress`` ({descriptor: {D*: stress}}), and when present
        ``map_unchanged`` (every embedding is the stored one: nothing was recomputed),
        ``interactive_map``, ``outliers`` (the 5 most unusual images per descriptor, with
        their score), ``n_neighbors``, ``clusters``, ``knn_preservation`` ({descriptor:
        {D*: fraction}}), ``stress_interval`` ({descriptor: {D*: (low, high)}}) and
        ``stress_pairs`` for stresses estimated from a sample (the ``"landmarks"``
        distance mode), ``r2_dim`` and ``r2``.
    """
    stress = {
        str(d): {
            int(k): round(float(v), 4)
            for k, v in zip(ds.n_components.values, ds.stress.sel(descriptor=d).values, strict=True)
        }
        for d in ds.descriptor.values
    }
    summary: dict[str, Any] = {"n_images": int(ds.sizes["image"]), "stress": stress}
    if "mds_unchanged" in ds.attrs:
        summary["map_unchanged"] = all(json.loads(ds.attrs["mds_unchanged"]).values())
    if "stress_interval" in ds.attrs:
        summary["stress_interval"] = {
            d: {int(k): (round(lo, 4), round(hi, 4)) for k, (lo, hi) in curve.items()}
            for d, curve in json.loads(ds.attrs["stress_interval"]).items()
        }
        summary["stress_pairs"] = json.loads(ds.attrs["stress_pairs"])
    if "knn_preservation" in ds.attrs:
        summary["knn_preservation"] = {
            d: {int(k): v for k, v in curve.items()}
            for d, curve in json.loads(ds.attrs["knn_preservation"]).items()
        }
    html = [f for f in files if f.suffix == ".html"]
    if html:
        summary["interactive_map"] = str(html[0].resolve())
    if "outlier_score" in ds:
        paths = ds.image_path.values
        summary["outliers"] = {
            str(d): [
                [str(paths[i]), round(float(score[i]), 4)]
                for i in np.argsort(-score, kind="stable")[:5]
            ]
            for d in ds.descriptor.values
            for score in [ds.outlier_score.sel(descriptor=d).values]
        }
        summary["n_neighbors"] = int(ds.outlier_score.attrs.get("n_neighbors", 5))
        summary["clusters"] = {
            str(d): int(np.unique(labels[labels >= 0]).size)
            for d in ds.descriptor.values
            for labels in [ds.cluster.sel(descriptor=d).values]
        }
    if "r2" in ds:
        # the parameters span three dimensions: report R^2 there (higher D* overfits small N)
        r2_dim = int(min(ds.n_components.values, key=lambda k: (k < 3, abs(k - 3))))
        summary["r2_dim"] = r2_dim
        summary["r2"] = {
            str(d): {
                str(p): round(float(ds.r2.sel(descriptor=d, parameter=p, n_components=r2_dim)), 3)
                for p in ds.parameter.values
            }
            for d in ds.descriptor.values
        }
    return summary


def result_link(
    path: str | os.PathLike[str], *, results_url: str | None, store: str | os.PathLike[str] | None
) -> str:
    """Where a browser opens an output: under ``results_url`` (``microscale serve``) when
    that is set and the file lies in the store, else its ``file://`` URI.

    Examples
    --------
    >>> result_link("/s/results/map.html", results_url="http://127.0.0.1:8000", store="/s")
    'http://127.0.0.1:8000/results/map.html'
    >>> result_link("/s/results/map.html", results_url=None, store="/s")
    'file:///s/results/map.html'
    """
    path = Path(path).absolute()
    if results_url and store is not None:
        root = Path(store).absolute()
        if path.is_relative_to(root):
            rel = urllib.parse.quote(path.relative_to(root).as_posix())
            return f"{results_url.rstrip('/')}/{rel}"
    return path.as_uri()


def summary_markdown(
    summary: dict,
    files: list[Path],
    *,
    results_url: str | None = None,
    store: str | os.PathLike[str] | None = None,
) -> str:
    """The summary artifact: stress, R^2, the map (its image and page), outliers, outputs.

    With ``results_url`` (where ``microscale serve --store STORE`` serves ``store``) the
    outputs are linked over HTTP, which a browser opens from the Prefect UI, and the map's
    PNG is shown inline; without it they are ``file://`` links, which browsers refuse to
    open from a web page.
    """

    def link(f: str | os.PathLike[str]) -> str:
        return result_link(f, results_url=results_url, store=store)

    links = "\n".join(f"- [{Path(f).name}]({link(f)}) (`{f}`)" for f in files)
    interactive = ""
    if "interactive_map" in summary:
        page = Path(summary["interactive_map"])
        served = bool(results_url) and link(page).startswith(("http://", "https://"))
        how = (
            "served by `microscale serve`"
            if served
            else "a local file: browsers refuse file links from a web page, so start "
            "`microscale serve --store STORE` and set `results_url` to link it here"
        )
        interactive = (
            f"\n\n## Interactive map\n[Open {page.name}]({link(page)}) (`{page}`, {how}). "
            "Hover a point for its thumbnail, click it for its nearest neighbours.\n"
        )
        png = page.with_suffix(".png")
        if served and any(Path(f).name == png.name for f in files):
            interactive += f"\n![the map]({link(png)})\n"
    r2 = ""
    if "r2" in summary:
        r2 = f"\n\n## R^2 of linear maps to the ground truth at D*={summary['r2_dim']}\n" + (
            "\n".join(
                f"- {d}: " + ", ".join(f"{p} {v}" for p, v in vals.items())
                for d, vals in summary["r2"].items()
            )
        )
    outliers = ""
    if "outliers" in summary:
        outliers = (
            f"\n\n## Most unusual images (distance to the {summary['n_neighbors']}-th nearest "
            "neighbour)\n"
            + "\n".join(
                f"- {d} ({summary['clusters'][d]} clusters): "
                + ", ".join(f"`{p}` ({s})" for p, s in top)
                for d, top in summary["outliers"].items()
            )
        )
    best = {
        d: min(c.items(), key=lambda kv: abs(kv[1] - 0.05)) for d, c in summary["stress"].items()
    }

    unchanged = "no new images: map unchanged\n\n" if summary.get("map_unchanged") else ""

    def line(d: str, k: int, s: float) -> str:
        text = f"- {d}: stress {s} at D*={k}"
        interval = summary.get("stress_interval", {}).get(d, {}).get(k)
        if interval:
            text += (
                f" (estimated from {summary['stress_pairs'][d]:,} sampled pairs, 95 % "
                f"interval {interval[0]}-{interval[1]})"
            )
        kept = summary.get("knn_preservation", {}).get(d, {}).get(k)
        if kept is not None:
            text += f"; k-NN preservation {kept}"
        return text

    return (
        f"# microscale map of {summary['n_images']} images\n\n"
        + unchanged
        + "\n".join(line(d, k, s) for d, (k, s) in best.items())
        + r2
        + interactive
        + outliers
        + f"\n\n## Outputs\n{links}\n"
    )
