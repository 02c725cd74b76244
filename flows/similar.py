"""Flow `similar`: the archive images nearest to a micrograph, and its place in the map."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from flows import _progress
from microscale.search import similar as similar_images


class SimilarParams(BaseModel):
    """A query: which micrograph, which store, how many neighbours."""

    model_config = ConfigDict(extra="forbid")

    image: Path = Field(description="The query micrograph (any format the ingest reads).")
    store: Path = Field(description="Store made by the pipeline flow (features and map).")
    k: int = Field(10, ge=1, description="Nearest archive images to list.")
    descriptor: Literal["cnn", "ps"] = Field("cnn", description="Texture descriptor.")
    page: int = Field(0, ge=0, description="Page of a multi-page file.")
    weights: str = Field("vgg19-normalized", description="Weights name or path (cnn).")
    device: str | None = Field(None, description="Torch device; empty: GPU if present.")


@task(name="nearest-images")
def nearest_images(params: SimilarParams) -> dict:
    """Describe the query as the store's images were, rank the archive, place the query."""
    res = similar_images(
        params.image,
        params.store,
        k=params.k,
        descriptor=params.descriptor,
        page=params.page,
        weights=params.weights,
        device=params.device,
    )
    return res.to_dict()


@flow(name="similar", log_prints=True)
def similar(params: SimilarParams) -> dict:
    """Query the archive by texture; publishes the ranked neighbours as a table artifact."""
    logger = get_run_logger()
    result = nearest_images(params)
    rows = [
        {"rank": r["rank"], "distance": round(r["distance"], 6), "path": r["path"]}
        for r in result["neighbours"]
    ]
    _progress.table(
        "similar-neighbours",
        params.store,
        rows,
        f"The {len(rows)} archive images nearest to {result['query']} ({result['descriptor']})",
    )
    if 2 in result["positions"]:
        logger.info("2-D position of the query: %s", result["positions"][2])
    logger.info("nearest: %s at %.4g", rows[0]["path"], rows[0]["distance"])
    return result
