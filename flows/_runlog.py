"""The ``pipeline`` run's record in the store's run log (:mod:`microscale.runlog`).

What Prefect knows (the flow-run id, its page in the UI) and what the stages return,
turned into the record's fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flows.params import PipelineParams
from microscale import runlog


def flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI; None without a run or a UI address (the
    ephemeral API of ``microscale run``, which ends with the run)."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not flow_run_id or not ui or not str(ui).startswith(("http://", "https://")):
        return None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}"


@contextlib.contextmanager
def pipeline_record(params: PipelineParams) -> Iterator[runlog.RunHandle]:
    """Record this flow run (under the store's lock, which the caller holds)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    with runlog.record_run(
        params.store,
        run_id=run_id,
        flow_run_url=flow_run_url(run_id),
        archive=params.archive,
        parameters=params.model_dump(mode="json"),
    ) as run:
        yield run


def ingest_counts(counts: dict[str, Any]) -> dict[str, int]:
    """The record's counts from what the ``ingest`` flow returns."""
    statuses = ("processed", "skipped", "failed")
    out = {f"files_{s}": int(counts.get(s, 0)) for s in statuses}
    out["files_found"] = sum(out.values())
    names = {"images_new": "new_images", "images": "n_images", "tiles_new": "new_tiles"}
    out.update({k: int(counts[v]) for k, v in names.items() if v in counts})
    return out


def finish(run: runlog.RunHandle, params: PipelineParams, files: list[str]) -> None:
    """The outputs, the store's tile count and the weights' sha256, once the map is written."""
    from microscale import store

    extra: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # best effort: never fails a run
        st = store.open_store(params.store, mode="r")
        extra["counts"] = {"tiles": st.n_tiles}
        if store.has_array(st, "features/cnn"):
            sha = store.array_attrs(st, "features/cnn").get("weights_sha256")
            extra["weights_sha256"] = str(sha) if sha else None
    run.update(outputs=files, **extra)
