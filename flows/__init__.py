"""Prefect flows of the microscale pipeline: ingest -> features -> distances -> embed.

Each flow is a thin table of contents over :mod:`microscale`'s library stages. Prefect
orchestrates (parameters as forms, schedules, retries, artifacts, logs); Dask computes:
every heavy stage submits coarse tasks (a batch of tiles, a few blocks of the distance
matrix) to a Dask cluster, so Dask workers never need to reach the Prefect API. The
``similar`` flow queries a mapped archive with a new micrograph.
"""

from flows.params import PipelineParams
from flows.pipeline import distances, embed, features, ingest, pipeline
from flows.similar import SimilarParams, similar

__all__ = [
    "PipelineParams",
    "SimilarParams",
    "distances",
    "embed",
    "features",
    "ingest",
    "pipeline",
    "similar",
]
