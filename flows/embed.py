"""Flow `embed`: MDS and evaluation as the final reduction; the xarray map and its figures."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.mapping import map_store, write_map
from microscale.summary import map_summary, summary_markdown


@task(name="embed-and-evaluate")
def embed_task(params: PipelineParams) -> tuple[list[Path], dict]:
    """Embed each descriptor's matrix, evaluate, write the map (Zarr, netCDF, PNG)."""
    ds = map_store(
        params.store,
        descriptors=params.descriptors,
        n_components=params.n_components,
        archive=params.archive,
        random_state=params.random_state,
        device=params.device,
        level=params.level,
        parameters=params.model_dump(mode="json"),
        n_neighbors=params.n_neighbors,
        landmarks=params.landmarks,
        max_dense=params.max_dense,
        distances=params.distances,
        stress_sample=params.stress_sample,
    )
    files = write_map(ds, params.store, max_thumbnails=params.max_thumbnails)
    return files, map_summary(ds, files)


@flow(name="embed", log_prints=True)
def embed(params: PipelineParams) -> dict:
    """The final reduction: publishes stress and metrics tables and a markdown summary."""
    logger = get_run_logger()
    files, summary = embed_task(params)
    rows = [
        {"descriptor": d, **{f"D*={k}": v for k, v in curve.items()}}
        for d, curve in summary["stress"].items()
    ]
    _progress.table("embed-stress", params.store, rows, "Kruskal stress-1 by embedding dimension")
    if "r2" in summary:
        rows = [{"descriptor": d, **r2} for d, r2 in summary["r2"].items()]
        _progress.table(
            "embed-metrics", params.store, rows, "R^2 of linear maps to the ground truth"
        )
    _progress.markdown(
        "embed-summary",
        params.store,
        summary_markdown(summary, files, results_url=params.results_url, store=params.store),
        "Where the map and its figures are",
    )
    logger.info("map of %d images written: %s", summary["n_images"], ", ".join(map(str, files)))
    return {**summary, "files": [str(f) for f in files]}


def pipeline_markdown(params: PipelineParams, counts: dict, result: dict) -> str:
    """The parent run's summary: the files by outcome, then the map's summary."""
    files = [Path(f) for f in result["files"]]
    head = (
        f"Files of `{params.archive}`: {counts['processed']} processed, {counts['skipped']} "
        f"skipped, {counts['failed']} failed; {counts['new_images']} new images, "
        f"{counts['n_images']} in the map.\n\n"
    )
    text = summary_markdown(result, files, results_url=params.results_url, store=params.store)
    title, _, rest = text.partition("\n\n")
    return f"{title}\n\n{head}{rest}"
