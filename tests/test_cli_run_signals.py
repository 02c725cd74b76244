"""Killing `microscale run` (SIGTERM, SIGKILL) leaves no process behind and a resumable store."""

import signal
import subprocess

import numpy as np
import psutil
import pytest

from microscale.demo import write_demo_archive
from microscale.results import read_dataset
from microscale.testing.runs import start_run, wait_for_children

pytestmark = pytest.mark.slow


def _read_map(store):
    with read_dataset(store / "results" / "map.nc") as ds:
        return ds.load()  # and closed: the next run rewrites the file


def _kill_mid_run(archive, store, sig):
    """Start a run, kill it once Prefect's server and a Dask worker run; what it left."""
    run = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        children = wait_for_children(run.pid)
        run.send_signal(sig)
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    _, alive = psutil.wait_procs(children, timeout=20)  # the watchdog allows 10 s of grace
    survivors = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in survivors:
        p.kill()
    return run.returncode, out, [" ".join(p.cmdline()) for p in survivors]


def test_sigterm_and_sigkill_of_the_driver_leave_no_process_and_the_next_run_completes(
    tmp_path,
):
    archive = write_demo_archive(tmp_path / "archive", n=9, size=64, seed=4)
    store = tmp_path / "store"

    code, out, survivors = _kill_mid_run(archive, store, signal.SIGTERM)
    assert survivors == []
    assert code == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM; the store is resumable" in out
    assert "Traceback" not in out

    code, out, survivors = _kill_mid_run(archive, store, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert survivors == []

    done = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert "Taking over the lock of the store" in err  # the SIGKILLed run's lock
    ds = _read_map(store)
    assert ds.sizes["image"] == 9 and np.isfinite(ds.embedding.values[..., :1]).all()

    again = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "no new images: map unchanged" in out
    same = _read_map(store)
    np.testing.assert_array_equal(same.embedding.values, ds.embedding.values)
    np.testing.assert_array_equal(same.stress.values, ds.stress.values)
