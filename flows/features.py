"""Flow `features`: texture vectors (and power spectra) of every new tile, on Dask workers."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import _progress
from flows.params import PipelineParams
from microscale.cluster import cluster_client
from microscale.stages import features as tile_stage
from microscale.stages import image_features as image_stage
from microscale.stages.features import DEFAULT_BATCH_SIZE


def texture_setting(params: PipelineParams) -> tuple[int, bool | None]:
    """Batch size and memory format of the forward pass: the user's ``batch_size``, else
    this machine's calibration for the tile size (``microscale calibrate``), else 8."""
    if params.batch_size is not None:
        return params.batch_size, None
    from microscale.calibration import read_calibration

    found = read_calibration(device=params.device, image_size=params.tile_size)
    if found is None:
        return DEFAULT_BATCH_SIZE, None
    return found.batch_size, found.channels_last


@task(name="tile-features")
def tile_features(params: PipelineParams, descriptor: str, address: str | None) -> dict:
    """Submit the missing feature batches of one descriptor and wait for them."""
    batch_size, channels_last = texture_setting(params)
    with cluster_client(address=address, allow_insecure=params.allow_insecure_dask) as client:
        counts = tile_stage.run_features(
            params.store,
            descriptor=descriptor,
            client=client,
            weights=params.weights,
            device=params.device,
            batch_size=batch_size,
            channels_last=channels_last,
            sketch_dim=params.sketch_dim,
            sketch_seed=params.sketch_seed,
            precision=params.texture_precision,
            on_done=_progress.progress(
                f"features-{descriptor}",
                params.store,
                stage=f"features {descriptor}",
                unit="tiles",
            ),
        )
        images = image_stage.image_features(
            params.store,
            descriptor=descriptor,
            client=client,
            on_done=_progress.progress(
                f"image-features-{descriptor}",
                params.store,
                stage=f"image features {descriptor}",
                unit="image groups",
            ),
        )
    return {
        "batches": counts.computed,
        "batches_done_before": counts.skipped,
        "image_groups": images.computed,
    }


@flow(name="features", log_prints=True)
def features(params: PipelineParams, dask_address: str | None = None) -> dict[str, dict]:
    """Texture vectors per tile, then the pixel-weighted mean per image."""
    logger = get_run_logger()
    address = dask_address or params.dask_address
    out = {}
    for descriptor in params.descriptors:
        out[descriptor] = tile_features(params, descriptor, address)
        logger.info("%s features: %s", descriptor, out[descriptor])
    return out
