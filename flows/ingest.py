"""Flow `ingest`: an archive folder into the store's tiles, every file with an outcome."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.cluster import cluster_client
from microscale.errors import NoImagesError
from microscale.ingest import IngestReport, ingest_archive
from microscale.preflight import no_images_message


@task(name="ingest-archive")
def ingest_task(params: PipelineParams, address: str | None = None) -> IngestReport:
    """Discover the new files of the archive; decode, normalise and tile them on Dask workers.

    A file that crashes the decoder kills only the worker decoding it: it is recorded as
    failed, and the flow goes on. Without an address a local cluster is started for the task.
    """
    with cluster_client(
        address=address, n_workers=params.n_workers, allow_insecure=params.allow_insecure_dask
    ) as client:
        return ingest_archive(
            params.archive,
            params.store,
            tile_size=params.tile_size,
            stride=params.stride,
            normalize=params.normalize,
            pixel_size_nm=params.pixel_size_nm,
            crop_bottom=params.crop_bottom,
            max_pixels=params.max_pixels,
            max_tiles_per_image=params.max_tiles_per_image,
            on_file=_progress.progress(
                "ingest-progress", params.store, stage=f"ingest {params.archive}", unit="files"
            ),
            client=client,
        )


@flow(name="ingest", log_prints=True)
def ingest(params: PipelineParams, dask_address: str | None = None) -> dict[str, int]:
    """Tile the archive into the store; publish outcomes by status and reason."""
    logger = get_run_logger()
    report = ingest_task(params, dask_address or params.dask_address)
    counts = report.counts()
    logger.info(
        "%d files: %d processed, %d skipped, %d failed; %d new images (%d tiles), %d in the store",
        sum(counts.values()),
        counts["processed"],
        counts["skipped"],
        counts["failed"],
        report.new_images,
        report.new_tiles,
        report.n_images,
    )
    rows = [
        {"status": status, "reason": kind, "files": n}
        for (status, kind), n in sorted(report.reasons().items())
    ]
    _progress.table("ingest-outcomes", params.store, rows, "Input files by outcome and reason")
    failed = [
        {"file": path, "reason": o["reason"]}
        for path, o in report.outcomes.items()
        if o["status"] == "failed"
    ]
    if failed:
        _progress.table(
            "ingest-failures", params.store, failed, "Files that could not be read, and why"
        )
    if report.n_images == 0:  # the later stages would have nothing to compute
        raise NoImagesError(no_images_message(params.archive, report.reasons()))
    return {
        **counts,
        "new_images": report.new_images,
        "n_images": report.n_images,
        "new_tiles": report.new_tiles,
        "reasons": rows,
    }
