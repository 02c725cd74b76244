"""Prefect flows of the microscale pipeline: ingest -> features -> distances -> embed.

Each flow is a thin table of contents over :mod:`microscale`'s library stages. Prefect
orchestrates (parameters as forms, schedules, retries, artifacts, logs); Dask computes:
every heavy stage submits coarse tasks (a batch of tiles, a few blocks of the distance
matrix) to a Dask cluster, so Dask workers never need to reach the Prefect API.

Flows, each in the module of its name (entrypoints ``flows/<module>.py:<flow>``):
``pipeline.pipeline`` (the four below, in order, with ``params.PipelineParams``),
``ingest.ingest``, ``features.features``, ``distances.distances``, ``embed.embed``, and
``similar.similar`` (query a mapped archive with a new micrograph, ``SimilarParams``).
The package does not re-export them: a flow named like its module would hide the module
(``import flows.features`` must give the module).
"""
