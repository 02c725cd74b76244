"""The CLI and the flow parameters of the distance mode."""

import pytest
from pydantic import ValidationError

from flows.params import PipelineParams
from microscale.quality import DEFAULT_STRESS_SAMPLE
from microscale.stages.distances import MAX_DENSE, distance_mode
from microscale.stages.landmarks import LANDMARK_METHOD


def test_cli_run_passes_the_distance_mode_to_the_pipeline(monkeypatch, tmp_path):
    import flows.pipeline as fp
    from microscale.cli import main
    from microscale.demo import write_demo_archive

    seen = {}

    def fake_pipeline(params):
        seen["params"] = params
        raise ValueError("stop here")

    monkeypatch.setattr(fp, "pipeline", fake_pipeline)
    archive = tmp_path / "archive"
    archive.mkdir()
    write_demo_archive(archive, n=9, size=32)  # images: the pre-run check passes
    code = main(["run", str(archive), "--store", str(tmp_path / "st"), "--distances",
                 "landmarks", "--landmark-method", "maxmin", "--stress-sample", "500"])  # fmt: skip
    assert code == 2
    p = seen["params"]
    assert (p.distances, p.landmark_method, p.stress_sample) == ("landmarks", "maxmin", 500)
    main(["run", str(archive), "--store", str(tmp_path / "st")])
    p = seen["params"]
    assert (p.distances, p.landmark_method, p.stress_sample, p.max_dense) == (
        None, LANDMARK_METHOD, DEFAULT_STRESS_SAMPLE, MAX_DENSE,
    )  # fmt: skip


def test_the_mode_is_chosen_by_size_unless_given(tmp_path):
    assert distance_mode(MAX_DENSE) == "full"
    assert distance_mode(MAX_DENSE + 1) == "landmarks"
    assert distance_mode(10**6, "full") == "full"
    with pytest.raises(ValueError, match="'distances' parameter"):
        distance_mode(10, "dense")
    with pytest.raises(ValidationError):
        PipelineParams(archive=tmp_path, store=tmp_path, distances="dense")
    with pytest.raises(ValidationError):
        PipelineParams(archive=tmp_path, store=tmp_path, stress_sample=2)
