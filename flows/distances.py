"""Flow `distances`: the blocked (n, n) distance matrix, out of core, on Dask workers.

In the "landmarks" mode (params.distances, or above params.max_dense images): the (n, m)
distances to the store's landmarks and each image's exact k nearest neighbours instead.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.cluster import cluster_client
from microscale.stages import distances as distance_stage
from microscale.stages import knn as knn_stage
from microscale.stages import landmarks as landmark_stage
from microscale.stages.embed import DEFAULT_LANDMARKS
from microscale.store import open_store


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


def distance_mode(params: PipelineParams, descriptor: str) -> str:
    """ "full" or "landmarks" for this store's size (the embed flow resolves it alike)."""
    store = open_store(params.store, mode="r")
    lv = distance_stage.distance_level(descriptor, params.level)
    return distance_stage.distance_mode(lv.n(store), params.distances, max_dense=params.max_dense)


@task(name="landmark-distances-and-neighbors")
def landmark_blocks(params: PipelineParams, descriptor: str, address: str | None) -> dict:
    """The (n, m) distances to the landmarks, then the exact k nearest neighbours."""
    common = {"descriptor": descriptor, "block_size": params.block_size,
              "device": params.device, "level": params.level}  # fmt: skip
    with cluster_client(address=address, allow_insecure=params.allow_insecure_dask) as client:
        lm = landmark_stage.run_landmark_distances(
            params.store, client=client, n_landmarks=params.landmarks or DEFAULT_LANDMARKS,
            method=params.landmark_method, random_state=params.random_state,
            on_done=_progress.progress(f"landmarks-{descriptor}", f"{descriptor} row blocks"),
            **common,
        )  # fmt: skip
        nn = knn_stage.run_neighbors(
            params.store, client=client, k=params.n_neighbors,
            on_done=_progress.progress(f"neighbors-{descriptor}", f"{descriptor} k-NN blocks"),
            **common,
        )  # fmt: skip
    return {
        "landmark_blocks": lm.computed,
        "landmark_blocks_done_before": lm.skipped,
        "neighbor_blocks": nn.computed,
        "neighbor_blocks_done_before": nn.skipped,
    }


@flow(name="distances", log_prints=True)
def distances(params: PipelineParams, dask_address: str | None = None) -> dict[str, dict]:
    """Only block pairs without a completion record are computed (new x all on growth)."""
    logger = get_run_logger()
    address = dask_address or params.dask_address
    out = {}
    for descriptor in params.descriptors:
        if distance_mode(params, descriptor) == "landmarks":
            out[descriptor] = landmark_blocks(params, descriptor, address)
        else:
            out[descriptor] = distance_blocks(params, descriptor, address)
        logger.info("%s distances: %s", descriptor, out[descriptor])
    return out
