"""`microscale run --no-calibrate` reaches the pipeline's parameters (calibrate=False)."""

import pytest

from microscale import cli


@pytest.mark.parametrize(("argv", "calibrate"), [([], True), (["--no-calibrate"], False)])
def test_no_calibrate_reaches_the_pipeline_parameters(monkeypatch, tmp_path, argv, calibrate):
    import flows.pipeline
    from microscale.demo import write_demo_archive

    seen = {}
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda params: seen.setdefault("p", params))
    monkeypatch.setattr(cli, "_run_summary", lambda result, seconds: "")
    write_demo_archive(tmp_path / "a", n=9, size=32)  # images: the pre-run check passes
    assert cli.main(["run", str(tmp_path / "a"), "--store", str(tmp_path / "s"), *argv]) == 0
    assert seen["p"].calibrate is calibrate
