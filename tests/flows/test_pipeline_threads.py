"""The pipeline's local cluster takes the calibrated threads per task unless the user sizes it."""

from __future__ import annotations

import pytest

from flows.params import PipelineParams
from flows.pipeline import cluster_options
from microscale import calibration as cal
from microscale import cluster


def _calibrate(threads_best: int) -> None:
    """A calibration on this machine (fake timings) whose best threads per task is given."""
    clock = [0.0]

    def forward(setting, images):  # sublinear in threads; `threads_best` 3x faster still
        t = setting.threads or 1
        clock[0] += len(images) / t**0.5 / (3.0 if t == threads_best else 1.0)

    cal.calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1,), n_images=2, timer=lambda: clock[0],
        forward=forward,
    )  # fmt: skip


def test_calibrated_threads_go_to_the_cluster_unless_the_user_sizes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cal.os, "cpu_count", lambda: 8)  # threads measured: 1, 4, 8
    params = PipelineParams(archive=tmp_path, store=tmp_path / "s", tile_size=32, device="cpu")
    assert cluster_options(params)["threads_per_task"] is None  # nothing measured yet

    _calibrate(threads_best=4)
    assert cal.calibrated_threads(device="cpu", image_size=32) == 4
    assert cluster_options(params)["threads_per_task"] == 4
    assert (
        cluster_options(params.model_copy(update={"threads_per_task": 2}))["threads_per_task"] == 2
    )  # the user's threads win
    sized = cluster_options(params.model_copy(update={"n_workers": 2}))
    assert sized["threads_per_task"] is None and sized["n_workers"] == 2  # so do their workers
    assert cal.calibrated_threads(device="cpu", image_size=64) is None  # another tile size


class FakeLocalCluster:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.mark.parametrize(
    ("n_workers", "threads", "workers", "inner"),
    [
        (None, None, 2, 4),  # the default: 4 threads per task
        (None, 2, 4, 2),  # calibrated 2: four workers of two threads
        (None, 1, 8, 1),
        (2, 3, 2, 3),  # the user's workers, the calibrated threads
        (4, 4, 4, 2),  # never more threads than the cores allow
    ],
)
def test_local_cluster_is_sized_by_threads_per_task(
    monkeypatch, n_workers, threads, workers, inner
):
    monkeypatch.setattr(cluster, "_cores", lambda: 8)
    monkeypatch.setattr(cluster.distributed, "LocalCluster", FakeLocalCluster)
    made, got = cluster._local_cluster(
        n_workers=n_workers, threads_per_worker=None, processes=True, memory_limit=None,
        dashboard_address=":0", threads_per_task=threads,
    )  # fmt: skip
    assert (made.kwargs["n_workers"], got) == (workers, inner)
    assert made.kwargs["env"]["OMP_NUM_THREADS"] == str(inner)


def test_threads_per_task_is_validated():
    with pytest.raises(ValueError, match="threads_per_task"):
        cluster.get_client(processes=False, threads_per_task=0)
