"""deploy/prefect.yaml's pull step: a run without MICROSCALE_REPO says what to set."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml
from prefect.deployments.steps.core import run_steps
from prefect.testing.utilities import prefect_test_harness

from flows.repository import set_repository
from microscale.errors import RepositoryNotFoundError

REPO = Path(__file__).resolve().parents[2]


def _pull_steps() -> list[dict]:
    return yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())["pull"]


@pytest.mark.slow  # run_steps reports the failure to a Prefect API: a temporary server (~10 s)
def test_pull_steps_without_the_variable_name_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MICROSCALE_REPO", raising=False)
    monkeypatch.chdir(tmp_path)
    # a patient start: Prefect's own ephemeral server gives up after 20 s on a loaded box
    with prefect_test_harness(server_startup_timeout=120), pytest.raises(Exception) as info:
        asyncio.run(run_steps(_pull_steps(), print_function=lambda *a: None))
    text = str(info.value) + str(info.value.__cause__)
    assert "MICROSCALE_REPO is not set" in text and "flows/pipeline.py" in text


def test_pull_steps_with_the_variable_change_to_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROSCALE_REPO", str(REPO))
    monkeypatch.chdir(tmp_path)
    out = asyncio.run(run_steps(_pull_steps(), print_function=lambda *a: None))
    assert Path(os.getcwd()) == REPO.resolve()
    assert out["directory"] == str(REPO.resolve())


def test_a_folder_without_the_flows_is_refused(tmp_path):
    with pytest.raises(RepositoryNotFoundError, match=r"MICROSCALE_REPO=.* has no flows/pipeline"):
        set_repository(str(tmp_path))
