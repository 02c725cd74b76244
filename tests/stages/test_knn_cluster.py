"""Many worker processes, one store: `dask scheduler` and `dask worker` processes (not a
LocalCluster) share a store path with the driver, and one worker is killed mid-stage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed
import numpy as np
import pytest

import microscale
from microscale import store as st
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.stages import knn
from microscale.stages import landmarks as lm
from microscale.testing.faults import Sabotage
from microscale.testing.stores import make, random_images

ARRAYS = ("landmarks/ps", "landmark_distances/ps", "neighbors/ps/index", "neighbors/ps/distance")


def _stages(root, client=None, on_done=None):
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=6, block_size=5,
                              device="cpu", client=client)  # fmt: skip
    knn.run_neighbors(root, descriptor="ps", k=4, block_size=5, device="cpu", client=client,
                      on_done=on_done)  # fmt: skip


def _start(args, env, log):
    return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
def test_separate_worker_processes_share_the_store_and_survive_a_killed_worker(tmp_path):
    images = random_images(30, seed=0, max_tiles=1)
    clean = make(tmp_path / "clean", images)
    shared = tmp_path / "shared"  # the one path the driver and the workers both use
    root = make(shared / "store", images)
    for r in (clean, root):
        feat.run_features(r, descriptor="ps")
        imf.image_features(r, descriptor="ps")
    _stages(clean)

    repo = str(Path(microscale.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "3"
    scheduler_file = tmp_path / "scheduler.json"
    procs = []
    with open(tmp_path / "dask.log", "w") as log:
        try:
            procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                env, log))  # fmt: skip
            deadline = time.monotonic() + 60
            while not scheduler_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            for _ in range(2):  # each under a nanny, which restarts a killed worker
                args = ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                        "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0"]  # fmt: skip
                procs.append(_start(args, env, log))
            killed = []
            address = json.loads(scheduler_file.read_text())["address"]
            assert address.startswith("tcp://127.0.0.1:")  # a scheduler of its own
            with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
                client.wait_for_workers(2, timeout=60)
                client.register_plugin(Sabotage("microscale.stages.knn", "read_rows", 0.3))

                def kill_one(done, total):  # mid pairs pass: SIGKILL a worker running a task
                    if done >= 2 and not killed:
                        for address, keys in client.processing().items():
                            if keys:
                                pid = client.run(os.getpid, workers=[address])[address]
                                os.kill(pid, signal.SIGKILL)
                                killed.append(pid)
                                return

                _stages(root, client=client, on_done=kill_one)
                assert killed, "no worker was busy to kill"
                assert len(client.scheduler_info()["workers"]) == 2  # its nanny restarted it
        finally:
            for p in procs[::-1]:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
    a, b = st.open_store(clean), st.open_store(root)
    for name in ARRAYS:
        np.testing.assert_array_equal(st.read_array(a, name), st.read_array(b, name), name)
    assert knn.run_neighbors(root, descriptor="ps", k=4, device="cpu").computed == 0
