"""Prefect flows of the microscale pipeline: ingest -> features -> distances -> embed.

Each flow is a thin table of contents over :mod:`microscale`'s library stages. Prefect
orchestrates (parameters as forms, schedules, artifacts, logs); Dask computes: every heavy
stage submits coarse tasks (a batch of tiles, a few blocks of the distance matrix) to a
Dask cluster, so Dask workers never need to reach the Prefect API. That is why the flows
do not use prefect-dask's ``DaskTaskRunner`` (which runs Prefect tasks, and their calls to
the API, on the workers). Failed Dask tasks are retried by Dask (a killed worker's tasks are
rescheduled, :mod:`microscale.stages`), transient reads by the store; Prefect tasks are not
retried: a failed run is simply run again and resumes where it stopped.

Flows, each in the module of its name (entrypoints ``flows/<module>.py:<flow>``):
``pipeline.pipeline`` (the four below, in order, with ``params.PipelineParams``),
``ingest.ingest``, ``features.features``, ``distances.distances``, ``embed.embed``, and
``similar.similar`` (query a mapped archive with a new micrograph, ``SimilarParams``).
The package does not re-export them: a flow named like its module would hide the module
(``import flows.features`` must give the module).
"""
