"""Flow `distances`: the blocked (n, n) distance matrix, out of core, on Dask workers."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.cluster import cluster_client
from microscale.stages import distances as distance_stage


@task(name="distance-blocks")
def distance_blocks(params: PipelineParams, descriptor: str, address: str | None) -> dict:
    """Submit the missing block pairs (i <= j), a few per Dask task, and wait."""
    with cluster_client(address=address, allow_insecure=params.allow_insecure_dask) as client:
        counts = distance_stage.run_distances(
            params.store,
            descriptor=descriptor,
            client=client,
            block_size=params.block_size,
            device=params.device,
            level=params.level,
            on_done=_progress.progress(
                f"distances-{descriptor}",
                params.store,
                stage=f"distances {descriptor}",
                unit="block pairs",
            ),
        )
    return {"blocks": counts.computed, "blocks_done_before": counts.skipped}


@flow(name="distances", log_prints=True)
def distances(params: PipelineParams, dask_address: str | None = None) -> dict[str, dict]:
    """Only block pairs without a completion record are computed (new x all on growth)."""
    logger = get_run_logger()
    address = dask_address or params.dask_address
    out = {}
    for descriptor in params.descriptors:
        out[descriptor] = distance_blocks(params, descriptor, address)
        logger.info("%s distances: %s", descriptor, out[descriptor])
    return out
