"""Faults with real processes: killed workers and drivers, torn writes, flaky and full disks.

Each test compares the store after the fault (and a resume) with a clean sequential run of
the same archive: no row or block may be missing, duplicated or different.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import distributed
import numpy as np
import pytest

from microscale import errors
from microscale import store as st
from microscale.cluster import get_client
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.faults import Sabotage, three_workers
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images

ARRAYS = ("features/ps", "image_features/ps", "distances/ps")
FEATURES, DISTANCES = "microscale.stages.features", "microscale.stages.distances"


def _all_stages(root, *, client=None, on_features=None, on_distances=None):
    feat.run_features(root, descriptor="ps", client=client, on_done=on_features)
    imf.image_features(root, descriptor="ps", client=client, images_per_task=4)
    return dist.run_distances(
        root, descriptor="ps", client=client, block_size=5, pairs_per_task=1, on_done=on_distances
    )


def _assert_same_store(a, b, names=ARRAYS):
    a, b = st.open_store(a), st.open_store(b)
    for name in names:
        np.testing.assert_array_equal(st.read_rows(a, name), st.read_rows(b, name), err_msg=name)


def _n_batches(root):
    return len(runner.row_ranges(st.open_store(root).n_tiles, 5))


# --------------------------------------------------------------------------- worker faults


def _kill_a_busy_worker(client, killed):
    """SIGKILL the process of one worker that is running a task now."""
    for address, keys in client.processing().items():
        if keys:
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            killed.append(address)
            return


@pytest.mark.slow
def test_killed_worker_mid_features_and_mid_distances(tmp_path):
    images = _images(12, seed=1)
    clean, faulty = _make(tmp_path / "clean", images), _make(tmp_path / "faulty", images)
    _all_stages(clean)
    killed = []

    def kill_in(stage):  # the stage's second completion kills a worker running another task
        calls = []  # (features counts tiles, distances block pairs: count the calls)

        def on_done(done, total):
            calls.append(done)
            if len(calls) == 3 and len(killed) == stage:  # 0, then two completions
                _kill_a_busy_worker(client, killed)

        return on_done

    with three_workers(Sabotage(DISTANCES, "read_rows", 0.4)) as client:
        client.register_plugin(Sabotage(FEATURES, "read_tiles", 0.4), name="slow-tiles")
        _all_stages(faulty, client=client, on_features=kill_in(0), on_distances=kill_in(1))
    assert len(killed) == 2  # once in each stage, while the worker ran a task
    _assert_same_store(clean, faulty)
    store = st.open_store(faulty)
    assert len(store.done_keys("features.ps")) == _n_batches(faulty)
    assert len(store.done_keys("distances.ps")) == 6  # 3 row blocks: 3 * 4 / 2 pairs
    assert feat.run_features(faulty, descriptor="ps").computed == 0


@pytest.mark.slow
def test_a_batch_that_kills_every_worker_is_given_up_and_the_others_are_done(tmp_path):
    images = _images(12, seed=2)
    clean, faulty = _make(tmp_path / "clean", images), _make(tmp_path / "faulty", images)
    feat.run_features(clean, descriptor="ps")
    with three_workers(
        Sabotage(FEATURES, "read_tiles", 0.2, poison=10), allowed_failures=1
    ) as client:
        message = r"1 of \d+ task\(s\) .* killed every worker.*000000002 \(rows 10:15\)"
        with pytest.raises(errors.FailedUnitsError, match=message) as info:
            feat.run_features(faulty, descriptor="ps", client=client)
        assert list(info.value.failed) == ["000000002 (rows 10:15)"]
        client.wait_for_workers(1, timeout=60)  # the cluster survives: nannies restart them
    store = st.open_store(faulty)
    done = store.done_keys("features.ps")
    assert sorted(done) == [f"{k:09d}" for k in range(_n_batches(faulty)) if k != 2]
    a, b = st.read_rows(st.open_store(clean), "features/ps"), st.read_rows(store, "features/ps")
    np.testing.assert_array_equal(np.delete(a, range(10, 15), 0), np.delete(b, range(10, 15), 0))
    assert np.isnan(b[10:15]).all()  # the poisoned batch wrote nothing
    assert feat.run_features(faulty, descriptor="ps").computed == 1  # a re-run retries just it
    _assert_same_store(clean, faulty, names=("features/ps",))


# --------------------------------------------------------------------------- driver faults


def _run_and_kill(root, code):
    """Run ``code`` in a fresh interpreter that SIGKILLs itself; its return code."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=50
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    return out


@pytest.mark.slow
def test_killed_driver_resumes_with_only_the_missing_batches(tmp_path):
    images = _images(12, seed=3)
    clean, faulty = _make(tmp_path / "clean", images), _make(tmp_path / "faulty", images)
    feat.run_features(clean, descriptor="ps")
    n, k = _n_batches(faulty), 3
    tiles = runner.row_ranges(st.open_store(faulty).n_tiles, 5)[k - 1][1]  # of k batches
    _run_and_kill(
        faulty,
        f"""
        import os, signal
        from microscale import pipeline

        def die_after(done, total):  # in tiles
            if done == {tiles}:
                os.kill(os.getpid(), signal.SIGKILL)

        pipeline.run_features({str(faulty)!r}, descriptor="ps", on_done=die_after)
        """,
    )
    store = st.open_store(faulty)
    assert len(store.done_keys("features.ps")) == k
    with store.lock():  # the dead driver's flock died with it: free at once
        pass
    counts = feat.run_features(faulty, descriptor="ps")
    assert counts == runner.StageCounts(computed=n - k, skipped=k)
    _assert_same_store(clean, faulty, names=("features/ps",))


@pytest.mark.slow
def test_a_process_killed_mid_chunk_write_leaves_no_torn_chunk(tmp_path):
    images = _images(12, seed=4)
    clean, faulty = _make(tmp_path / "clean", images), _make(tmp_path / "faulty", images)
    feat.run_features(clean, descriptor="ps")
    # Zarr's own write path, killed after half of chunk 2's bytes reached the temporary file.
    _run_and_kill(
        faulty,
        f"""
        import contextlib, os, signal
        from zarr.storage import _local
        from microscale import pipeline

        original = _local._atomic_write

        @contextlib.contextmanager
        def dying(path, mode, exclusive=False):
            with original(path, mode, exclusive) as fh:
                if "features/ps/c/2/" in path.as_posix():
                    class Half:
                        def write(self, data):
                            view = memoryview(data).cast("B")
                            fh.write(view[: len(view) // 2])
                            fh.flush()
                            os.kill(os.getpid(), signal.SIGKILL)
                    yield Half()
                else:
                    yield fh

        _local._atomic_write = dying
        pipeline.run_features({str(faulty)!r}, descriptor="ps")
        """,
    )
    chunks = faulty / st.GROUP_NAME / "features" / "ps" / "c"
    assert not (chunks / "2" / "0").exists()  # never a torn chunk under its real name
    assert len(list(chunks.rglob("*.partial"))) == 1  # only the temporary file
    store = st.open_store(faulty)
    assert sorted(store.done_keys("features.ps")) == [f"{k:09d}" for k in range(2)]
    counts = feat.run_features(faulty, descriptor="ps")
    assert counts.computed == _n_batches(faulty) - 2
    assert not list(chunks.rglob("*.partial"))  # the leftover is cleaned
    _assert_same_store(clean, faulty, names=("features/ps",))


# --------------------------------------------------------------------------- reads


@pytest.fixture
def flaky_reads(monkeypatch):
    """Make the next reads of the first tile chunk fail with the given errnos, then succeed."""
    from zarr.storage import LocalStore

    original = LocalStore.get
    failures, calls, sleeps = [], [], []

    async def get(self, key, *args, **kwargs):
        if key == "tiles/c/0/0/0":
            calls.append(key)
            if failures:
                code = failures.pop(0)
                raise OSError(code, os.strerror(code), key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    monkeypatch.setattr(st, "_sleep", sleeps.append)
    return failures, calls, sleeps


def test_transient_read_errors_are_retried_with_backoff(tmp_path, flaky_reads):
    failures, calls, sleeps = flaky_reads
    store = st.open_store(_make(tmp_path / "s", _images(3, seed=5)))
    expected = st.read_tiles(store, 0, 4)
    calls.clear()
    failures.extend([errno.EIO, errno.ESTALE])  # fail twice, then succeed
    np.testing.assert_array_equal(st.read_tiles(store, 0, 4), expected)
    assert sleeps == [st.READ_BACKOFF_S, 2 * st.READ_BACKOFF_S]
    assert len(calls) == 3  # one chunk, three attempts


def test_permanent_read_errors_are_raised_at_once(tmp_path, flaky_reads):
    failures, calls, sleeps = flaky_reads
    store = st.open_store(_make(tmp_path / "s", _images(3, seed=6)))
    calls.clear()
    failures.append(errno.EACCES)
    with pytest.raises(PermissionError, match="Permission denied"):
        st.read_tiles(store, 0, 4)
    assert sleeps == [] and len(calls) == 1


def test_a_read_that_keeps_failing_gives_up_and_leaves_its_batch_undone(tmp_path, flaky_reads):
    failures, calls, sleeps = flaky_reads
    root = _make(tmp_path / "s", _images(3, seed=7))
    failures.extend([errno.EIO] * st.READ_ATTEMPTS)
    with pytest.raises(OSError, match="Input/output error") as info:
        feat.run_features(root, descriptor="ps")
    assert "failed 4 times" in "".join(info.value.__notes__)
    assert len(sleeps) == st.READ_ATTEMPTS - 1
    assert st.open_store(root).done_keys("features.ps") == {}
    assert feat.run_features(root, descriptor="ps").computed == _n_batches(root)


# --------------------------------------------------------------------------- no workers


def test_a_cluster_without_workers_fails_within_the_timeout(tmp_path, monkeypatch):
    root = _make(tmp_path / "s", _images(3, seed=8))
    monkeypatch.setattr(runner, "WORKER_TIMEOUT", 2.0)
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        start = time.monotonic()
        with pytest.raises(errors.NoWorkersError, match="has had no workers for 2 s"):
            feat.run_features(root, descriptor="ps", client=client)
        assert time.monotonic() - start < 10
    assert feat.run_features(root, descriptor="ps").computed == _n_batches(root)


def test_workers_that_vanish_mid_run_fail_within_the_timeout(tmp_path, monkeypatch):
    root = _make(tmp_path / "s", _images(12, seed=9))
    monkeypatch.setattr(runner, "WORKER_TIMEOUT", 2.0)
    monkeypatch.setattr(runner, "_POLL_S", 0.2)
    original = feat.read_tiles

    def slow(store, *args):
        time.sleep(0.3)
        return original(store, *args)

    monkeypatch.setattr(feat, "read_tiles", slow)  # in-process workers see the patch
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def retire_all(done, total):
            if 0 < done <= 5:  # the first batch's end (in tiles)
                cluster.scale(0)

        start = time.monotonic()
        with pytest.raises(errors.NoWorkersError, match="no workers"):
            feat.run_features(root, descriptor="ps", client=client, on_done=retire_all)
        assert time.monotonic() - start < 15
    done = len(st.open_store(root).done_keys("features.ps"))
    assert 1 <= done < _n_batches(root)
    assert feat.run_features(root, descriptor="ps").computed == _n_batches(root) - done


@pytest.mark.slow
def test_a_scheduler_killed_mid_run_fails_fast(tmp_path):
    import concurrent.futures
    import json

    root = _make(tmp_path / "s", _images(12, seed=11))
    file = tmp_path / "scheduler.json"
    cli = [sys.executable, "-m"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [*cli, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0"]
        + ["--no-dashboard", "--scheduler-file", str(file)],
        **quiet,
    )
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        worker = subprocess.Popen(
            [*cli, "distributed.cli.dask_worker", address, "--nthreads", "1"]
            + ["--no-nanny", "--no-dashboard"],
            **quiet,
        )
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with distributed.Client(address, timeout="10s") as client:
            client.wait_for_workers(1, timeout=30)
            client.register_plugin(Sabotage(FEATURES, "read_tiles", 0.4))

            def kill_scheduler(done, total):
                if 0 < done <= 5:  # the first batch's end (in tiles)
                    scheduler.kill()

            start = time.monotonic()
            with pytest.raises(concurrent.futures.CancelledError) as info:
                feat.run_features(root, descriptor="ps", client=client, on_done=kill_scheduler)
            assert time.monotonic() - start < 15
            assert "scheduler is gone" in "".join(info.value.__notes__)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.kill()
                process.wait(timeout=30)
    done = len(st.open_store(root).done_keys("features.ps"))
    assert feat.run_features(root, descriptor="ps").computed == _n_batches(root) - done


def test_a_scheduler_nobody_listens_on_fails_fast():
    import socket

    with socket.socket() as s:  # a free port, closed again: nobody listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(OSError, match="Timed out|connect"):
        get_client(address=f"tcp://127.0.0.1:{port}", timeout="2s")
    assert time.monotonic() - start < 15


# --------------------------------------------------------------------------- full disk


def test_a_full_disk_marks_nothing_done_that_is_not_written(tmp_path, monkeypatch):
    from zarr.storage import _local

    images = _images(12, seed=10)
    clean, faulty = _make(tmp_path / "clean", images), _make(tmp_path / "faulty", images)
    feat.run_features(clean, descriptor="ps")
    original = _local._put

    def full(path, value, exclusive=False):
        if "features/ps/c/" in path.as_posix() and int(path.parent.name) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(path, value, exclusive)

    monkeypatch.setattr(_local, "_put", full)
    with pytest.raises(OSError, match="No space left") as info:
        feat.run_features(faulty, descriptor="ps")
    assert "is full" in "".join(info.value.__notes__)
    store = st.open_store(faulty)
    done = store.done_keys("features.ps")
    assert sorted(done) == [f"{k:09d}" for k in range(3)]
    chunks = faulty / st.GROUP_NAME / "features" / "ps" / "c"
    assert all((chunks / str(int(key)) / "0").is_file() for key in done)  # recorded => on disk
    assert not list(chunks.rglob("*.partial"))
    monkeypatch.setattr(_local, "_put", original)  # space freed
    assert feat.run_features(faulty, descriptor="ps").computed == _n_batches(faulty) - 3
    _assert_same_store(clean, faulty, names=("features/ps",))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (needs root: skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if out.returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
def test_a_really_full_disk_then_freed_space(tmp_path, tiny_disk):
    images = _images(24, seed=12)
    clean, faulty = _make(tmp_path / "clean", images), _make(tiny_disk / "s", images)
    feat.run_features(clean, descriptor="ps")
    stat = os.statvfs(tiny_disk)
    ballast = tiny_disk / "ballast"
    ballast.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 48 * 1024))  # ~2 batches
    with pytest.raises(OSError) as info:
        feat.run_features(faulty, descriptor="ps")
    assert info.value.errno == errno.ENOSPC
    store = st.open_store(faulty)
    done = store.done_keys("features.ps")
    assert len(done) < _n_batches(faulty)
    a, b = st.read_rows(st.open_store(clean), "features/ps"), st.read_rows(store, "features/ps")
    for extent in done.values():  # recorded => on disk, and right
        start, stop = extent["rows"]
        np.testing.assert_array_equal(b[start:stop], a[start:stop])
    ballast.unlink()  # space freed
    assert feat.run_features(faulty, descriptor="ps").computed == _n_batches(faulty) - len(done)
    assert not list(faulty.rglob("*.partial"))
    _assert_same_store(clean, faulty, names=("features/ps",))
