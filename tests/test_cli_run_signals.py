"""Killing `microscale run` (SIGTERM, SIGKILL) leaves no process behind and a resumable store,
and every run, however it ended, its record in STORE/runs/."""

import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest

from microscale.demo import write_demo_archive
from microscale.results import read_dataset
from microscale.runlog import read_runs
from microscale.testing.runs import start_run, wait_for_children

pytestmark = pytest.mark.slow

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


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
    (stopped,) = read_runs(store).runs
    assert (stopped.outcome, stopped.reason) == ("interrupted", "stopped by SIGTERM")

    code, out, survivors = _kill_mid_run(archive, store, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert survivors == []
    # its record still says "running": read once the lock no longer names its process
    assert [r.outcome for r in read_runs(store).runs] == ["interrupted", "interrupted"]

    done = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert "Taking over the lock of the store" in err  # the SIGKILLed run's lock
    runs = read_runs(store).runs
    assert [r.outcome for r in runs] == ["completed", "interrupted", "interrupted"]
    rec = runs[0]  # newest first
    assert re.fullmatch(UUID, rec.run_id)  # the flow run's id, in the command's one record
    assert rec.flow_run_url is None  # the ephemeral API ends with the run: no page to link
    files = re.search(r"Files: (\d+) processed, (\d+) skipped, (\d+) failed; (\d+) new", out)
    assert files, out
    c = rec.counts
    assert [c["files_processed"], c["files_skipped"], c["files_failed"], c["images_new"]] == [
        int(n) for n in files.groups()
    ]
    assert c["images"] == 9 and c["tiles"] > 0
    printed = [str(Path(p).resolve()) for p in re.findall(r"^  (/\S+)$", out, flags=re.M)]
    assert sorted(str(store.resolve() / o["path"]) for o in rec.outputs) == sorted(printed)
    assert rec.parameters_digest == stopped.parameters_digest  # the same command
    assert rec.ended and rec.versions["prefect"]
    ds = _read_map(store)
    assert ds.sizes["image"] == 9 and np.isfinite(ds.embedding.values[..., :1]).all()

    again = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "no new images: map unchanged" in out
    same = _read_map(store)
    np.testing.assert_array_equal(same.embedding.values, ds.embedding.values)
    np.testing.assert_array_equal(same.stress.values, ds.stress.values)
