"""Flow `embed`: MDS and evaluation as the final reduction; the xarray map and its figures."""

from __future__ import annotations

from pathlib import Path

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
    )
    files = write_map(ds, params.store)
    stress = {
        str(d): {
            int(k): round(float(v), 4)
            for k, v in zip(ds.n_components.values, ds.stress.sel(descriptor=d).values, strict=True)
        }
        for d in ds.descriptor.values
    }
    summary = {"n_images": int(ds.sizes["image"]), "stress": stress}
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
    links = "\n".join(f"- `{f}`" for f in files)
    best = {
        d: min(c.items(), key=lambda kv: abs(kv[1] - 0.05)) for d, c in summary["stress"].items()
    }
    _progress.markdown(
        "pipeline-summary",
        f"# microscale map of {summary['n_images']} images\n\n"
        + "\n".join(f"- {d}: stress {s} at D*={k}" for d, (k, s) in best.items())
        + f"\n\n## Outputs\n{links}\n",
        "Where the map and its figures are",
    )
    logger.info("map of %d images written: %s", summary["n_images"], ", ".join(map(str, files)))
    return {**summary, "files": [str(f) for f in files]}
