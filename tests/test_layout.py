"""The package layout: old import paths keep working, modules import on their own, lightly."""

import importlib

import pytest

from microscale import pipeline
from microscale.stages import _runner, distances, embed, features, image_features

STAGES = (_runner, features, image_features, distances, embed)


@pytest.mark.parametrize("name", pipeline.__all__)
def test_every_old_pipeline_name_is_the_stage_modules_object(name):
    owners = [m for m in STAGES if name in vars(m)]
    errors = importlib.import_module("microscale.errors")
    owners += [errors] if name in vars(errors) else []
    assert owners, f"microscale.pipeline.{name} has no home in microscale.stages"
    assert all(getattr(pipeline, name) is getattr(m, name) for m in owners)


def test_old_pipeline_paths_that_docs_and_users_name():
    from microscale.pipeline import embed as old_embed
    from microscale.pipeline import run_distances as old_run_distances

    assert old_run_distances is distances.run_distances
    assert old_embed is embed.embed
    assert pipeline.DENSE_LIMIT == embed.DENSE_LIMIT
    assert pipeline.DEFAULT_WEIGHTS == "vgg19-normalized"


def test_setting_a_stage_setting_through_the_old_module_reaches_the_stage(monkeypatch):
    monkeypatch.setattr(pipeline, "READ_AHEAD", 3)
    monkeypatch.setattr(pipeline, "WORKER_TIMEOUT", 2.0)
    assert distances.READ_AHEAD == 3 and _runner.WORKER_TIMEOUT == 2.0
    monkeypatch.undo()
    assert distances.READ_AHEAD is None and _runner.WORKER_TIMEOUT == 60.0
