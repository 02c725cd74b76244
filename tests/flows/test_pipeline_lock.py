"""The `pipeline` flow holds the store's lock for the whole run."""

import subprocess
import sys
import textwrap
import time

import pytest

from flows.params import PipelineParams
from flows.pipeline import pipeline
from microscale.errors import StoreLockedError


def test_the_flow_is_refused_before_its_cluster_starts_when_another_run_holds_the_store(
    tmp_path, monkeypatch
):
    import flows.pipeline as fp

    store = tmp_path / "store"
    code = textwrap.dedent(
        f"""
        import sys
        from microscale.lock import store_lock
        with store_lock({str(store)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def no_cluster(**kwargs):
        raise AssertionError("a cluster was started although the store is locked")

    monkeypatch.setattr(fp, "cluster_client", no_cluster)
    try:
        assert holder.stdout.readline().strip() == "held"
        params = PipelineParams(archive=tmp_path, store=store)
        t = time.perf_counter()
        with pytest.raises(StoreLockedError, match=f"Another microscale run \\(pid {holder.pid} "):
            pipeline.fn(params)  # the flow's body, without Prefect's engine
        assert time.perf_counter() - t < 1.0
    finally:
        holder.communicate("\n", timeout=30)
