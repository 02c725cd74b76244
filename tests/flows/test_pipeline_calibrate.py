"""The `pipeline` flow measures the machine's texture settings once, before its cluster,
where the run would use them (flows.pipeline.calibrate_once)."""

from __future__ import annotations

import logging

import pytest

import flows.pipeline as fp
from flows.params import PipelineParams


def _params(tmp_path, **kw) -> PipelineParams:
    return PipelineParams(archive=tmp_path, store=tmp_path / "store", tile_size=128, **kw)


def test_a_run_with_cnn_features_calibrates_with_its_device_tile_size_and_weights(
    tmp_path, calibrations
):
    lines = []
    fp.calibrate_once(_params(tmp_path, device="cpu", weights="vgg19-imagenet"), lines.append)
    ((call),) = calibrations
    assert {k: call[k] for k in ("device", "image_size", "weights")} == {
        "device": "cpu", "image_size": 128, "weights": "vgg19-imagenet",
    }  # fmt: skip
    call["on_start"]("measuring")  # the line a measurement starts with goes to the log
    assert lines == ["measuring"]


@pytest.mark.parametrize(
    "options",
    [
        {"calibrate": False},  # the user said no (--no-calibrate)
        {"batch_size": 4},  # the user's batch size: nothing to measure
        {"dask_address": "tcp://127.0.0.1:8786"},  # a remote cluster: other machines
        {"descriptors": ["ps"]},  # no forward passes
    ],
)
def test_no_calibration_where_the_run_would_not_use_it(tmp_path, calibrations, options):
    fp.calibrate_once(_params(tmp_path, **options), print)
    assert calibrations == []


def test_the_flow_calibrates_before_its_cluster_starts(tmp_path, monkeypatch, calibrations):
    order = []

    class Stop(Exception):
        pass

    def cluster_client(**kwargs):
        order.append(("cluster", len(calibrations)))
        raise Stop

    monkeypatch.setattr(fp, "cluster_client", cluster_client)
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    with pytest.raises(Stop):
        fp.pipeline.fn(_params(tmp_path))  # the flow's body, without Prefect's engine
    assert order == [("cluster", 1)]  # the calibration came first (it sizes the cluster)
