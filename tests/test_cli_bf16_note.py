"""The note printed after `microscale run`'s summary on fast bfloat16 (cli._bf16_note).

The hardware detection (calibration.fast_bf16) and the calibration cache
(calibration.read_calibration) are replaced, so that the tests do not depend on this
machine's CPU or on a calibration file.
"""

from types import SimpleNamespace

import pytest

from microscale import calibration, cli
from microscale.demo import write_demo_archive
from microscale.testing.runs import QUICK_OPTIONS

NO_FAST = "No fast bfloat16 on this device: float32 texture vectors are the right choice."


def _params(precision: str = "float32") -> SimpleNamespace:
    return SimpleNamespace(device="cpu", texture_precision=precision, tile_size=128)


def _hardware(monkeypatch, found: str | None) -> None:
    monkeypatch.setattr(calibration, "fast_bf16", lambda device=None: found)


def _calibration(monkeypatch, speedup: float | None) -> list[dict]:
    calls: list[dict] = []

    def read(**kwargs):
        calls.append(kwargs)
        return None if speedup is None else SimpleNamespace(bf16_speedup=speedup)

    monkeypatch.setattr(calibration, "read_calibration", read)
    return calls


def test_without_fast_bfloat16_the_note_keeps_float32(monkeypatch):
    _hardware(monkeypatch, None)
    calls = _calibration(monkeypatch, 2.0)  # a calibration, but no hardware: not read
    note = cli._bf16_note(_params())
    assert note == NO_FAST
    assert "--texture-precision" not in note and calls == []


def test_fast_bfloat16_without_a_calibration_points_at_calibrate(monkeypatch):
    _hardware(monkeypatch, "AMX-BF16")
    calls = _calibration(monkeypatch, None)
    note = cli._bf16_note(_params())
    assert note.startswith("This device has fast bfloat16 (AMX-BF16); 'microscale calibrate'")
    assert "measures what --texture-precision bfloat16 would save" in note
    assert "as fast as float32" not in note and "save about" not in note  # no figure
    assert calls == [{"device": "cpu", "image_size": 128}]


@pytest.mark.parametrize(("speedup", "saved"), [(2.0, "50%"), (2.5, "60%"), (1.25, "20%")])
def test_fast_bfloat16_with_a_calibration_says_the_saving(monkeypatch, speedup, saved):
    _hardware(monkeypatch, "AVX-512 BF16")
    calls = _calibration(monkeypatch, speedup)
    note = cli._bf16_note(_params())
    assert note.startswith("This device has fast bfloat16 (AVX-512 BF16): --texture-precision")
    assert f"ran {speedup:.2f}x as fast as float32 in this machine's calibration" in note
    assert f"it would save about {saved} of the texture-vector time" in note
    assert calls == [{"device": "cpu", "image_size": 128}]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("AMX-BF16", "Texture vectors in bfloat16 (AMX-BF16)."),
        (None, "Texture vectors in bfloat16 (no fast bfloat16 found here)."),
    ],
)
def test_a_bfloat16_run_names_the_hardware(monkeypatch, found, expected):
    _hardware(monkeypatch, found)
    _calibration(monkeypatch, 2.0)
    assert cli._bf16_note(_params("bfloat16")) == expected


@pytest.mark.parametrize("found", ["AMX-BF16", None])
def test_run_prints_the_note_right_after_the_summary(monkeypatch, tmp_path, capsys, found):
    import flows.pipeline

    archive = write_demo_archive(tmp_path / "archive", n=9, size=64, seed=1)
    seen = {}

    def pipeline(params):
        seen["params"] = params
        return {"fake": "result"}

    monkeypatch.setattr(flows.pipeline, "pipeline", pipeline)
    monkeypatch.setattr(cli, "_prefect_defaults", lambda **kwargs: None)
    monkeypatch.setattr(cli, "_run_summary", lambda result, seconds: f"SUMMARY {result}")
    _hardware(monkeypatch, found)
    _calibration(monkeypatch, 2.0)
    argv = ["run", str(archive), "--store", str(tmp_path / "store"), "--quiet", *QUICK_OPTIONS]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert seen["params"].texture_precision == "float32"
    assert lines[-2] == "SUMMARY {'fake': 'result'}"
    if found:
        assert lines[-1].startswith("This device has fast bfloat16 (AMX-BF16): ")
        assert "save about 50%" in lines[-1]
    else:
        assert lines[-1] == NO_FAST
