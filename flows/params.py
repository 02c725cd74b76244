"""The pipeline's parameters, as one pydantic model: it renders as a form in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microscale.ingest import MAX_TILES_PER_IMAGE
from microscale.quality import DEFAULT_STRESS_SAMPLE
from microscale.stages.embed import DEFAULT_LANDMARKS, DENSE_LIMIT
from microscale.stages.landmarks import LANDMARK_METHOD


class PipelineParams(BaseModel):
    """Everything a pipeline run needs: what to read, where to write, how to compute."""

    model_config = ConfigDict(extra="forbid")

    archive: Path = Field(description="Folder of micrographs, searched recursively.")
    store: Path = Field(description="Store directory: tiles, features, distances, results.")
    dask_address: str | None = Field(
        None, description="Existing Dask scheduler; empty: a local GPU or CPU cluster."
    )
    allow_insecure_dask: bool = Field(
        False, description="Allow a non-loopback scheduler without TLS (not recommended)."
    )
    n_workers: int | None = Field(None, ge=1, description="Local cluster size (default: auto).")
    threads_per_task: int | None = Field(
        None,
        ge=1,
        description=(
            "Torch threads per task of a local CPU cluster. Empty: this machine's "
            "calibration (microscale calibrate) unless n_workers is set, else cores / workers."
        ),
    )
    dashboard_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the local Dask cluster's dashboard on 127.0.0.1; empty: a free one.",
    )
    results_url: str | None = Field(
        None,
        description=(
            "Where `microscale serve --store STORE` serves this store's results (e.g. "
            "http://127.0.0.1:8000/): the artifacts link the map there. Empty: file paths."
        ),
    )
    tile_size: int = Field(256, ge=16, description="Tile side in pixels.")
    stride: int | None = Field(None, ge=1, description="Tile step (default: tile_size).")
    normalize: Literal["percentile", "minmax", "dtype"] = Field(
        "percentile", description="Per-image intensity mapping to [0, 1] (docs/method.md, 1)."
    )
    pixel_size_nm: float | None = Field(
        None, gt=0, description="Resample calibrated images to this pixel size."
    )
    crop_bottom: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Rows of SEM information bar to crop from the bottom (0: none); auto: the bar the "
            "vendor's header declares (FEI, TESCAN, Hitachi, JEOL), else one found in the "
            "pixels. Fixed per store."
        ),
    )
    max_pixels: int = Field(
        2**28, ge=1, description="Most pixels decoded at once; tiled TIFFs above it are streamed."
    )
    max_tiles_per_image: int | None = Field(
        MAX_TILES_PER_IMAGE,
        ge=1,
        description=(
            "Skip an image that would make more tiles (judged from its declared size, before "
            "decoding): 1600 keeps one image within ~1% of a run of 10^4 1024x1024 images. "
            "Empty: no cap."
        ),
    )
    descriptors: list[Literal["cnn", "ps"]] = Field(
        default_factory=lambda: ["cnn", "ps"], description="CNN texture vectors, PS baseline."
    )
    level: Literal["image", "tile"] = Field(
        "image", description="Map images (pixel-weighted mean of their tiles) or every tile."
    )
    weights: str = Field(
        "vgg19-normalized",
        description="Backbone: vgg19-normalized, vgg19-imagenet, random[:SEED], or a path.",
    )
    device: str | None = Field(None, description="Torch device; empty: GPU if present.")
    batch_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Tiles per forward pass. Empty: this machine's calibration (microscale "
            "calibrate; measured once by the first run without one, see calibrate), else 8."
        ),
    )
    calibrate: bool = Field(
        True,
        description=(
            "Measure this machine's fastest texture-vector settings once (microscale "
            "calibrate), before the first CNN features, when none are cached for the tile "
            "size; not with batch_size set, a remote Dask cluster or random weights."
        ),
    )
    texture_precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description=(
            "Texture vectors in exact float32, or with bfloat16 convolutions: 2.2x faster "
            "on CPUs with AVX-512 BF16, distances off by ~0.5% of the median. Fixed per store."
        ),
    )
    sketch_dim: int | None = Field(
        None,
        ge=1,
        description=(
            "Store CNN texture vectors as seeded random projections ('sketches') of this "
            "length, made on the workers: 2048 cuts storage and distance cost ~150x for "
            "~1.6% distance error. Empty: full vectors. Fixed per store."
        ),
    )
    sketch_seed: int = Field(
        0, ge=0, description="Seed of the sketch's projection; fixed per store."
    )
    block_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Rows per block of the distance matrix, fixed per store. Empty: the largest "
            "up to 1024 whose task fits in half a worker's memory per thread."
        ),
    )
    n_components: list[int] = Field(
        default_factory=lambda: list(range(1, 11)), description="MDS dimensions."
    )
    random_state: int = Field(0, description="Seed for MDS tie-breaking.")
    landmarks: int | None = Field(
        None,
        ge=2,
        description=(
            "Embed by landmark MDS on this many landmarks (in the full mode the stress is "
            "still that of the full matrix; the landmarks mode chooses them once per store). "
            f"Empty: dense MDS up to max_dense images, then {DEFAULT_LANDMARKS} landmarks."
        ),
    )
    max_dense: int = Field(
        DENSE_LIMIT,
        ge=2,
        description=(
            "Most images with the full n x n distance matrix (8 bytes per entry on disk) and "
            "dense MDS (~33 bytes per entry in memory: 3.3 GB at 10,000); larger maps use "
            "the 'landmarks' distance mode and landmark MDS."
        ),
    )
    distances: Literal["full", "landmarks"] | None = Field(
        None,
        description=(
            "full: the n x n distance matrix. landmarks: only the n x m distances to the "
            "landmarks and each image's exact k nearest neighbours (n_neighbors), streamed; "
            "the stress is then estimated from a sample. Empty: full up to max_dense images."
        ),
    )
    landmark_method: Literal["random", "maxmin"] = Field(
        LANDMARK_METHOD,
        description="How the landmarks mode chooses its landmarks, once per store.",
    )
    stress_sample: int = Field(
        DEFAULT_STRESS_SAMPLE,
        ge=3,
        description="Images sampled for the stress estimate of the landmarks mode.",
    )

    n_neighbors: int = Field(
        5,
        ge=1,
        description="Neighbours listed per image; the outlier score is the k-th's distance.",
    )
    max_thumbnails: int = Field(
        2000, ge=0, description="Thumbnails embedded in map.html (the most unusual first)."
    )

    @field_validator("n_components")
    @classmethod
    def _positive_dims(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("n_components must list positive dimensions, e.g. [1, 2, 3].")
        return sorted(set(value))

    @model_validator(mode="after")
    def _landmarks_above_dims(self) -> PipelineParams:
        if self.landmarks is not None and self.landmarks <= max(self.n_components):
            raise ValueError(
                f"landmarks ({self.landmarks}) must exceed every MDS dimension "
                f"(up to {max(self.n_components)}); pass more landmarks or fewer n_components."
            )
        return self

    @field_validator("descriptors")
    @classmethod
    def _some_descriptor(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("descriptors must name at least one of 'cnn', 'ps'.")
        return list(dict.fromkeys(value))
