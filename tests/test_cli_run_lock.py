"""`microscale run` holds the store's lock for the whole run: a second run exits at once."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from microscale.demo import write_demo_archive
from microscale.lock import lock_holder
from microscale.testing.runs import QUICK_OPTIONS, run_env, run_timed, start_run

#: CPU seconds a refused run may use: about 1 s here (Python, numpy and the CLI); importing
#: torch, Prefect and distributed takes 5 s.
CPU_LIMIT_S = 2.5
#: Wall seconds, generous for a loaded box: a run that waited for the lock would not end
#: before the first one (stopped only after this check).
WAIT_LIMIT_S = 20.0


def _cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "microscale.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=run_env(),
    )


@pytest.fixture
def archive(tmp_path):
    return write_demo_archive(tmp_path / "archive", n=9, size=64, seed=2)


def test_a_second_run_exits_at_once_with_one_line_naming_the_first(archive, tmp_path):
    store = tmp_path / "store"
    first = start_run(archive, store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (lock_holder(store) or {}).get("pid") != first.pid:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        holder = lock_holder(store)
        timed = run_timed(
            [sys.executable, "-m", "microscale.cli", "run", str(archive), "--store", str(store)]
            + list(QUICK_OPTIONS),
            timeout=60,
            env=run_env(),
        )
        second = timed.done
        assert second.returncode == 2, second.stderr
        # At once: without starting Prefect, Dask or torch (5 s of CPU to import alone),
        # and without waiting for the lock. CPU time, because a loaded box stretches wall
        # time: a refused run took 2.8 s of wall time beside another test process.
        assert timed.cpu_s < CPU_LIMIT_S, f"{timed.cpu_s:.2f} s of CPU before refusing"
        assert timed.wall_s < WAIT_LIMIT_S, f"{timed.wall_s:.1f} s before refusing"
        (line,) = second.stderr.strip().splitlines()
        assert line == (
            f"microscale run: error: Another microscale run (pid {first.pid} on "
            f"{socket.gethostname()}, started {holder['started']}) is using the store "
            f"{store}; wait for it to finish or stop that process."
        )
        assert second.stdout == ""
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


def test_a_lock_from_another_host_is_refused_at_once_and_broken_by_unlock(archive, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    holder = {"pid": 12, "host": "node-17.cluster", "started": "2025-01-02T03:04:05+00:00"}
    (store / ".lock").write_text(json.dumps(holder))
    refused = _cli("run", archive, "--store", store, *QUICK_OPTIONS, timeout=30)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "locked by a microscale run on another host (pid 12 on node-17.cluster" in line
    assert f"break the lock with `microscale unlock --store {store}`" in line
    assert not (store / "store.zarr").exists()  # nothing was written

    unlocked = _cli("unlock", "--store", store)
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout.strip() == (
        f"broke the lock of the store {store}, held by pid 12 on node-17.cluster since "
        "2025-01-02T03:04:05+00:00"
    )
    assert lock_holder(store) is None
    assert _cli("unlock", "--store", store).stdout.strip() == f"the store {store} was not locked"
