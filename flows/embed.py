"""Flow `embed`: MDS and evaluation as the final reduction; the xarray map and its figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.mapping import map_store, write_map


@task(name="embed-and-evaluate")
def embed_task(params: PipelineParams) -> tuple[list[Path], dict]:
    """Embed each descriptor's matrix, evaluate, write the map (Zarr, netCDF, PNG)."""
    ds = map_store(
        params.store,
        descriptors=params.descriptors,
        dims=params.n_components,
        archive=params.archive,
        random_state=params.random_state,
        device=params.device,
        level=params.level,
        parameters=params.model_dump(mode="json"),
        n_neighbors=params.n_neighbors,
        landmarks=params.landmarks,
        max_dense=params.max_dense,
    )
    files = write_map(ds, params.store, max_thumbnails=params.max_thumbnails)
    stress = {
        str(d): {
            int(k): round(float(v), 4)
            for k, v in zip(ds.n_components.values, ds.stress.sel(descriptor=d).values, strict=True)
        }
        for d in ds.descriptor.values
    }
    summary = {"n_images": int(ds.sizes["image"]), "stress": stress}
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
    return files, summary


def summary_markdown(summary: dict, files: list[Path]) -> str:
    """The ``pipeline-summary`` artifact: stress, the interactive map, outliers, outputs."""
    links = "\n".join(f"- `{f}`" for f in files)
    interactive = ""
    if "interactive_map" in summary:
        page = Path(summary["interactive_map"])
        interactive = (
            f"\n\n## Interactive map\n[{page.name}]({page.as_uri()}) (`{page}`): one "
            "self-contained HTML file; open it in a browser, no server or network needed. "
            "Hover a point for its thumbnail, click it for its nearest neighbours.\n"
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
    return (
        f"# microscale map of {summary['n_images']} images\n\n"
        + "\n".join(f"- {d}: stress {s} at D*={k}" for d, (k, s) in best.items())
        + interactive
        + outliers
        + f"\n\n## Outputs\n{links}\n"
    )


@flow(name="embed", log_prints=True)
def embed(params: PipelineParams) -> dict:
    """The final reduction: publishes stress and metrics tables and a markdown summary."""
    logger = get_run_logger()
    files, summary = embed_task(params)
    rows = [
        {"descriptor": d, **{f"D*={k}": v for k, v in curve.items()}}
        for d, curve in summary["stress"].items()
    ]
    _progress.table("embed-stress", rows, "Kruskal stress-1 by embedding dimension")
    if "r2" in summary:
        rows = [{"descriptor": d, **r2} for d, r2 in summary["r2"].items()]
        _progress.table("embed-metrics", rows, "R^2 of linear maps to the ground truth")
    _progress.markdown(
        "pipeline-summary", summary_markdown(summary, files), "Where the map and its figures are"
    )
    logger.info("map of %d images written: %s", summary["n_images"], ", ".join(map(str, files)))
    return {**summary, "files": [str(f) for f in files]}
