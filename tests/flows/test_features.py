"""The features flow passes its parameters to the library."""

from contextlib import nullcontext

import pytest
from pydantic import ValidationError

from flows import features as features_flow
from flows.params import PipelineParams
from microscale.stages import _runner as runner
from microscale.stages import embed as emb


def _counts():
    return runner.StageCounts(computed=1, skipped=0)


def test_flow_parameters_reach_the_library(tmp_path, monkeypatch):
    params = PipelineParams(archive=tmp_path, store=tmp_path / "s", sketch_dim=2048,
                            sketch_seed=9, landmarks=500, max_dense=1000)  # fmt: skip
    dumped = params.model_dump(mode="json")  # what the results' provenance records
    assert {k: dumped[k] for k in ("sketch_dim", "sketch_seed", "landmarks", "max_dense")} == {
        "sketch_dim": 2048, "sketch_seed": 9, "landmarks": 500, "max_dense": 1000,
    }  # fmt: skip
    defaults = PipelineParams(archive=tmp_path, store=tmp_path)
    assert (defaults.sketch_dim, defaults.sketch_seed) == (None, 0)
    assert (defaults.landmarks, defaults.max_dense) == (None, emb.DENSE_LIMIT)
    with pytest.raises(ValidationError, match="sketch_dim"):
        PipelineParams(archive=tmp_path, store=tmp_path, sketch_dim=0)
    with pytest.raises(ValidationError, match="sketch_seed"):
        PipelineParams(archive=tmp_path, store=tmp_path, sketch_seed=-1)
    with pytest.raises(ValidationError, match=r"landmarks \(5\) must exceed every MDS dim"):
        PipelineParams(archive=tmp_path, store=tmp_path, landmarks=5)

    seen = {}
    monkeypatch.setattr(features_flow, "cluster_client", lambda **kw: nullcontext(None))
    monkeypatch.setattr(features_flow._progress, "progress", lambda *a, **k: None)
    monkeypatch.setattr(
        features_flow.tile_stage, "run_features", lambda root, **kw: seen.update(kw) or _counts()
    )
    monkeypatch.setattr(features_flow.image_stage, "image_features", lambda root, **kw: _counts())
    features_flow.tile_features.fn(params, "cnn", None)
    assert seen["sketch_dim"] == 2048 and seen["sketch_seed"] == 9
