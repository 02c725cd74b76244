"""The features flow's progress artifact moves within a feature batch, and is throttled."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import numpy as np

from flows import _progress
from flows import features as features_flow
from flows.params import PipelineParams
from microscale import texture
from microscale.stages import _runner as runner
from microscale.stages import _unit_progress
from microscale.testing.stores import S
from microscale.testing.stores import make as _make
from tests.stages.helpers import ONE_LAYER

N = 8  #: tiles, all in one feature batch


class Artifacts:
    """Stands in for Prefect's artifact API: keeps each update of each progress artifact."""

    def __init__(self):
        self.updates = {}

    def create(self, *, progress, key, description):
        self.updates[key] = [(progress, description)]
        return key

    def update(self, *, artifact_id, progress, description):
        self.updates[artifact_id].append((progress, description))


def _artifacts(monkeypatch):
    found = Artifacts()
    monkeypatch.setattr(_progress, "create_progress_artifact", found.create)
    monkeypatch.setattr(_progress, "update_progress_artifact", found.update)
    return found


def test_the_features_artifact_moves_while_the_batch_runs(tmp_path, monkeypatch, fake_weights):
    import distributed

    rng = np.random.default_rng(3)
    images = [(rng.random((2, S, S)).astype(np.float32), np.full(2, 50.0)) for _ in range(4)]
    root = _make(tmp_path / "s", images, features_chunk=64)
    artifacts = _artifacts(monkeypatch)
    monkeypatch.setattr(_unit_progress, "REPORT_EVERY_S", 0.05)
    monkeypatch.setattr(_unit_progress, "SEND_EVERY_S", 0.0)
    monkeypatch.setattr(_progress, "MIN_UPDATE_S", 0.0)
    gram = texture.gram_vectors

    def slow(*args, **kwargs):  # a forward pass of 0.15 s (in-process workers see it)
        time.sleep(0.15)
        return gram(*args, **kwargs)

    monkeypatch.setattr(texture, "gram_vectors", slow)
    run = features_flow.tile_stage.run_features

    def with_fake_weights(root, **kwargs):
        return run(root, **{**kwargs, "weights": fake_weights, "layers": ONE_LAYER})

    monkeypatch.setattr(features_flow.tile_stage, "run_features", with_fake_weights)
    monkeypatch.setattr(
        features_flow.image_stage, "image_features",
        lambda root, **kw: runner.StageCounts(computed=1, skipped=0),
    )  # fmt: skip

    @contextmanager
    def in_process(**kwargs):
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
            ) as cluster,  # fmt: skip
            distributed.Client(cluster) as client,
        ):
            yield client

    monkeypatch.setattr(features_flow, "cluster_client", in_process)
    params = PipelineParams(archive=tmp_path, store=root, batch_size=1, device="cpu")
    out = features_flow.tile_features.fn(params, "cnn", None)
    assert out["batches"] == 1
    updates = artifacts.updates[_progress.artifact_key("features-cnn", root)]
    counts = [int(re.search(rf"(\d+)/{N} tiles", d).group(1)) for _, d in updates[1:]]
    assert counts[0] == 0 and counts[-1] == N
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts
    assert len([c for c in counts if 0 < c < N]) >= 3, counts  # within the one batch
    percents = [p for p, _ in updates]
    assert percents[-1] == 100.0 and percents == sorted(percents)


def test_artifact_updates_are_throttled_and_the_end_always_goes(tmp_path, monkeypatch):
    artifacts = _artifacts(monkeypatch)
    on_done = _progress.progress("features-cnn", tmp_path, stage="features cnn", unit="tiles")
    start = time.monotonic()
    for done in range(1001):  # a thousand counts, within a fraction of a second
        on_done(done, 1000)
    elapsed = time.monotonic() - start
    updates = artifacts.updates[_progress.artifact_key("features-cnn", tmp_path)]
    # created, the first count, one per MIN_UPDATE_S, the end (not a thousand)
    assert len(updates) <= 3 + elapsed / _progress.MIN_UPDATE_S, (len(updates), elapsed)
    assert updates[-1][0] == 100.0 and updates[-1][1].startswith("features cnn: 1000/1000")
