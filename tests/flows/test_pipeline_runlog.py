"""The `pipeline` flow records its run in the store's run log (flows/_runlog.py)."""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace

import pytest
from prefect.settings import PREFECT_UI_URL, temporary_settings

import flows.pipeline as fp
from flows._runlog import flow_run_url
from flows.params import PipelineParams
from microscale.runlog import read_runs


@pytest.fixture()
def fake_stages(monkeypatch, tmp_path):
    """The flow's body with stages that only return counts (no cluster, no Prefect API)."""
    results = tmp_path / "store" / "results"
    calls = {"distances": lambda: {"ps": {"blocks": 1}}}

    def embed(params):
        results.mkdir(parents=True, exist_ok=True)
        (results / "map.html").write_text("<html>map</html>")
        return {"files": [str(results / "map.html")]}

    ingest = {"processed": 3, "skipped": 1, "failed": 2, "new_images": 3, "n_images": 5,
              "new_tiles": 12, "reasons": []}  # fmt: skip
    client = SimpleNamespace(scheduler=SimpleNamespace(address="inproc://x"), dashboard_link="")
    monkeypatch.setattr(fp, "cluster_client", lambda **kw: contextlib.nullcontext(client))
    monkeypatch.setattr(fp, "describe_cluster", lambda c: "fake")
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(fp, "ingest", lambda params, dask_address: ingest)
    monkeypatch.setattr(fp, "features", lambda params, dask_address: {"ps": {}})
    monkeypatch.setattr(fp, "distances", lambda params, dask_address: calls["distances"]())
    monkeypatch.setattr(fp, "embed", embed)
    monkeypatch.setattr(fp, "pipeline_markdown", lambda *a: "")
    for name in ("link", "markdown", "table"):
        monkeypatch.setattr(fp._progress, name, lambda *a, **k: None)
    return PipelineParams(archive=tmp_path, store=tmp_path / "store"), calls


def test_a_flow_run_leaves_a_completed_record_with_its_counts_and_outputs(fake_stages):
    params, _ = fake_stages
    fp.pipeline.fn(params)
    (rec,) = read_runs(params.store).runs
    assert rec.outcome == "completed" and rec.archive == str(params.archive)
    assert rec.counts == {
        "files_found": 6, "files_processed": 3, "files_skipped": 1, "files_failed": 2,
        "images_new": 3, "images": 5, "tiles_new": 12,
    }  # fmt: skip
    assert [o["path"] for o in rec.outputs] == ["results/map.html"]
    assert rec.flow_run_url is None  # no flow run (the body called without Prefect)


def test_a_failed_flow_run_is_recorded_with_what_it_had_counted(fake_stages):
    params, calls = fake_stages

    def fail():
        raise MemoryError("a distance block did not fit")

    calls["distances"] = fail
    with pytest.raises(MemoryError):
        fp.pipeline.fn(params)
    (rec,) = read_runs(params.store).runs
    assert (rec.outcome, rec.reason) == ("failed", "MemoryError: a distance block did not fit")
    assert rec.counts["files_found"] == 6 and rec.outputs == ()


def test_the_flow_run_page_is_linked_only_with_a_ui_address():
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200/"}):
        assert flow_run_url("abc") == "http://127.0.0.1:4200/runs/flow-run/abc"
        assert flow_run_url(None) is None
    with temporary_settings(restore_defaults={PREFECT_UI_URL}):
        # the ephemeral API of `microscale run` has no UI address (and ends with the run)
        assert flow_run_url("abc") is None
