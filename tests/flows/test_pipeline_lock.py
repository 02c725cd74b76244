"""The `pipeline` flow holds the store's lock for the whole run."""

import time

import pytest

from flows.params import PipelineParams
from flows.pipeline import pipeline
from microscale.errors import StoreLockedError
from microscale.testing.runs import lock_held_elsewhere


def test_the_flow_is_refused_before_its_cluster_starts_when_another_run_holds_the_store(
    tmp_path, monkeypatch
):
    import flows.pipeline as fp

    store = tmp_path / "store"

    def no_cluster(**kwargs):
        raise AssertionError("a cluster was started although the store is locked")

    monkeypatch.setattr(fp, "cluster_client", no_cluster)
    with lock_held_elsewhere(store) as holder:
        params = PipelineParams(archive=tmp_path, store=store)
        wall, cpu = time.perf_counter(), time.thread_time()
        with pytest.raises(StoreLockedError, match=f"Another microscale run \\(pid {holder.pid} "):
            pipeline.fn(params)  # the flow's body, without Prefect's engine
        # at once: this thread's CPU time (a loaded box stretches wall time, not this), and
        # a wall time that rules out waiting for the holder (which never lets go)
        assert time.thread_time() - cpu < 1.0
        assert time.perf_counter() - wall < 20.0


def test_damaged_inputs_found_mid_run_are_recomputed_in_the_same_run(tmp_path, monkeypatch):
    """A stage that finds damaged inputs drops their records and raises; the flow then makes
    one more pass (ingest rebuilds tiles, the stages recompute exactly the dropped units)."""
    import contextlib
    import logging
    from types import SimpleNamespace

    import flows.pipeline as fp
    from microscale.errors import DamagedStoreError

    calls = []
    fails = iter([True, False])

    def features(params, dask_address):
        calls.append("features")
        if next(fails):
            raise DamagedStoreError("1 unit(s) of the tiles stage are damaged and were dropped")
        return {"ps": {"computed": 1}}

    def ingest(params, dask_address):
        calls.append("ingest")
        return {"new_images": 3 if calls.count("ingest") == 1 else 0, "reasons": []}

    client = SimpleNamespace(scheduler=SimpleNamespace(address="inproc://x"), dashboard_link="")
    monkeypatch.setattr(fp, "cluster_client", lambda **kw: contextlib.nullcontext(client))
    monkeypatch.setattr(fp, "describe_cluster", lambda c: "fake")
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(fp, "ingest", ingest)
    monkeypatch.setattr(fp, "features", features)
    monkeypatch.setattr(fp, "distances", lambda params, dask_address: {"ps": {"computed": 1}})
    monkeypatch.setattr(fp, "embed", lambda params: {"files": []})
    monkeypatch.setattr(fp, "pipeline_markdown", lambda *a: "")
    for name in ("link", "markdown", "table"):
        monkeypatch.setattr(fp._progress, name, lambda *a, **k: None)
    out = fp.pipeline.fn(PipelineParams(archive=tmp_path, store=tmp_path / "store"))
    assert calls == ["ingest", "features", "ingest", "features"]
    assert out["ingest"]["new_images"] == 3  # what the run found, not the healing pass
    assert out["features"] == {"ps": {"computed": 1}}
