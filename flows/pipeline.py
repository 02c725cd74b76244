"""Flow `pipeline`: ingest -> features -> distances -> embed, as subflows, on one cluster."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger

from flows import _progress, _runlog
from flows.distances import distances
from flows.embed import embed, pipeline_markdown
from flows.features import features
from flows.ingest import ingest
from flows.params import PipelineParams
from microscale.cluster import cluster_client, describe_cluster
from microscale.errors import DamagedStoreError
from microscale.lock import store_lock


def cluster_options(params: PipelineParams) -> dict:
    """The pipeline's Dask cluster: ``params``' address or local sizing. Torch threads per
    task: ``params.threads_per_task``, else (no ``n_workers`` either) this machine's
    calibration for the tile size (:func:`microscale.calibration.calibrated_threads`), else
    the cluster's default."""
    threads = params.threads_per_task
    if threads is None and params.n_workers is None and params.dask_address is None:
        from microscale.calibration import calibrated_threads

        threads = calibrated_threads(device=params.device, image_size=params.tile_size)
    return {
        "address": params.dask_address,
        "n_workers": params.n_workers,
        "threads_per_task": threads,
        "allow_insecure": params.allow_insecure_dask,
        "dashboard_port": params.dashboard_port,
    }


def calibrate_once(params: PipelineParams, log: Callable[[str], object]) -> None:
    """The one-off texture calibration of this machine before the run's CNN features
    (:func:`microscale.calibration.ensure_calibration`), where the run would use it: the
    ``cnn`` descriptor, no ``batch_size`` given, a local cluster (a remote one's workers
    are other machines) and ``params.calibrate``."""
    if (
        not params.calibrate
        or "cnn" not in params.descriptors
        or params.batch_size is not None
        or params.dask_address is not None
    ):
        return
    from microscale.calibration import ensure_calibration

    ensure_calibration(
        device=params.device, image_size=params.tile_size, weights=params.weights, on_start=log
    )


@flow(name="pipeline", log_prints=True)
def pipeline(params: PipelineParams) -> dict:
    """Map an archive of micrographs: only new files, features and blocks are computed.

    A local Dask cluster (GPU workers when there are GPUs) is started for the run unless
    ``params.dask_address`` names one; the subflows connect to it by address (ingest
    decodes on its workers, so a file that crashes the decoder takes down only a worker).
    The store's lock is held from the first write to the last: a second run on the store
    is refused (:class:`~microscale.errors.StoreLockedError`) before its cluster starts.
    The run leaves a record in the store's run log (:mod:`microscale.runlog`).
    """
    # one lock for the whole run (the stages re-enter it); the run's record in runs/
    with store_lock(params.store), _runlog.pipeline_record(params) as run:
        logger = get_run_logger()
        calibrate_once(params, logger.info)  # before the cluster: it sizes the cluster too
        with cluster_client(**cluster_options(params)) as client:
            address = client.scheduler.address
            logger.info("Dask cluster: %s", describe_cluster(client))
            logger.info("Dask dashboard: %s", client.dashboard_link)
            _progress.link(
                "dask-dashboard", params.store, client.dashboard_link, "Dask dashboard",
                "The Dask cluster's dashboard while this run computes (task stream, workers)",
            )  # fmt: skip
            counts = None
            for attempt in (1, 2):
                try:
                    done = ingest(params, dask_address=address)
                    counts = counts or done  # what this run found, not the healing pass's
                    run.update(counts=_runlog.ingest_counts(counts))
                    feats = features(params, dask_address=address)
                    dists = distances(params, dask_address=address)
                    break
                except DamagedStoreError as exc:
                    # a stage found damaged inputs (their records are dropped): one more
                    # pass recomputes exactly those units, tiles included, then goes on
                    if attempt == 2:
                        raise
                    logger.warning("%s -- computing those units again", exc)
        result = embed(params)
        _runlog.finish(run, params, result["files"])
        # the run a user opens from the deployment carries the results too, not only the subflows
        _progress.markdown(
            "pipeline-summary", params.store, pipeline_markdown(params, counts, result),
            "The map: counts, stress, R^2, the most unusual images, where the outputs are",
        )  # fmt: skip
        _progress.table(
            "pipeline-outcomes",
            params.store,
            counts["reasons"],
            "Input files by outcome and reason",
        )
    return {"ingest": counts, "features": feats, "distances": dists, "embed": result}


__all__ = [
    "calibrate_once",
    "cluster_options",
    "distances",
    "embed",
    "features",
    "ingest",
    "pipeline",
]
