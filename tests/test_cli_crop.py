"""`microscale run --crop-bottom N / --no-auto-crop / --max-tiles-per-image N` reach the flow."""

from __future__ import annotations

import pytest

from microscale import cli


@pytest.mark.parametrize(
    ("argv", "crop", "cap"),
    [
        ([], "auto", 1600),
        (["--crop-bottom", "64"], 64, 1600),
        (["--no-auto-crop"], 0, 1600),
        (["--max-tiles-per-image", "50"], "auto", 50),
    ],
)
def test_run_options_reach_the_pipeline_parameters(monkeypatch, tmp_path, argv, crop, cap):
    import flows.pipeline
    from microscale.demo import write_demo_archive

    seen = {}
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda params: seen.setdefault("p", params))
    monkeypatch.setattr(cli, "_run_summary", lambda result, seconds: "")
    write_demo_archive(tmp_path / "a", n=9, size=32)  # images: the pre-run check passes
    assert cli.main(["run", str(tmp_path / "a"), "--store", str(tmp_path / "s"), *argv]) == 0
    assert (seen["p"].crop_bottom, seen["p"].max_tiles_per_image) == (crop, cap)


def test_crop_bottom_and_no_auto_crop_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "a", "--crop-bottom", "3", "--no-auto-crop"])
    assert "not allowed with" in capsys.readouterr().err
