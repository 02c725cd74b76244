"""`microscale run` on a terminal: the features bar moves within a feature batch; --quiet
prints no progress at all."""

from __future__ import annotations

import io
import logging
import re
import sys
import time

import numpy as np
import pytest

from microscale import texture
from microscale.progress import StageProgress
from microscale.stages import _unit_progress
from microscale.stages import features as feat
from microscale.testing.stores import S
from microscale.testing.stores import make as _make
from tests.stages.helpers import ONE_LAYER

N = 8  #: tiles, all in one feature batch


class Terminal(io.StringIO):
    """Standard error as a terminal: tqdm draws its bars there."""

    def isatty(self):
        return True


@pytest.fixture
def dask_warnings_only():
    """Dask's loggers at WARNING, as the CLI sets them (here Dask is imported already)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.usefixtures("dask_warnings_only")
def test_the_features_bar_moves_within_a_batch(tmp_path, monkeypatch, capfd, fake_weights, quiet):
    import distributed

    import flows.pipeline as fp
    from microscale import cli
    from microscale.demo import write_demo_archive

    rng = np.random.default_rng(4)
    images = [(rng.random((2, S, S)).astype(np.float32), np.full(2, 50.0)) for _ in range(4)]
    root = _make(tmp_path / "s", images, features_chunk=64)
    monkeypatch.setattr(_unit_progress, "REPORT_EVERY_S", 0.05)
    monkeypatch.setattr(_unit_progress, "SEND_EVERY_S", 0.0)
    gram = texture.gram_vectors

    def slow(*args, **kwargs):  # a forward pass of 0.2 s (in-process workers see it)
        time.sleep(0.2)
        return gram(*args, **kwargs)

    monkeypatch.setattr(texture, "gram_vectors", slow)

    def pipeline(params):  # the features stage as the flow runs it, on a Dask cluster
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
            ) as cluster,  # fmt: skip
            distributed.Client(cluster) as client,
        ):
            feat.run_features(
                root, descriptor="cnn", client=client, weights=fake_weights, layers=ONE_LAYER,
                device="cpu", batch_size=1, on_done=StageProgress("features cnn", "tiles"),
            )  # fmt: skip
        return {}

    monkeypatch.setattr(fp, "pipeline", pipeline)
    monkeypatch.setattr(cli, "_run_summary", lambda result, seconds: "the summary")
    monkeypatch.setattr(cli, "_bf16_note", lambda params: "")
    for key in (
        "PREFECT_LOGGING_LEVEL",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
        "DASK_LOGGING__DISTRIBUTED",
    ):
        monkeypatch.delenv(key, raising=False)  # restored after the test  # fmt: skip
    archive = tmp_path / "archive"
    archive.mkdir()
    write_demo_archive(archive, n=9, size=32)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["run", str(archive), "--store", str(tmp_path / "store")]
    assert cli.main(argv + ["--quiet"] * quiet) == 0
    out, err = capfd.readouterr()
    drawn = terminal.getvalue()
    assert out.strip() == "the summary" and "tiles" not in err
    if quiet:
        assert drawn == "", drawn
        return
    shown = {int(k) for k in re.findall(rf"\b(\d+)/{N}\b", drawn)}
    assert {0, N} <= shown
    assert len(shown & set(range(1, N))) >= 3, drawn  # the bar moved within the one batch
    assert "features cnn" in drawn and "tiles" in drawn
