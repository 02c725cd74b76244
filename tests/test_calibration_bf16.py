"""The calibration times bfloat16 only where the device has fast bfloat16.

Emulated bfloat16 runs at 0.01x float32 on an AVX2 CPU, so timing it there made
`microscale calibrate` take about ten minutes for a figure nobody can use. The hardware
detection (calibration.fast_bf16) is replaced, so the tests do not depend on this CPU.
"""

from __future__ import annotations

import argparse

import pytest

from microscale import calibration as cal
from microscale import cli
from microscale.calibration import TextureCalibration, calibrate_texture, read_calibration
from tests.test_calibration import FakeClock, cost, fake_forward


def _calibrate(tmp_path, monkeypatch, hardware: str | None, **kwargs):
    monkeypatch.setattr(cal, "fast_bf16", lambda device=None: hardware)
    clock = FakeClock()
    forward, calls = fake_forward(clock, cost)
    result = calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1, 2), n_images=2, cache_dir=tmp_path,
        timer=clock, forward=forward, **kwargs,
    )  # fmt: skip
    return result, calls


def test_without_fast_bfloat16_it_is_not_timed(tmp_path, monkeypatch):
    result, calls = _calibrate(tmp_path, monkeypatch, None)
    assert not any(s.precision == "bfloat16" for s in calls)
    assert result.bf16_speedup is None
    assert (result.batch_size, result.channels_last) == (2, True)  # float32 as before
    # the cache keeps "not timed" and gives it back
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) == result


@pytest.mark.parametrize("hardware", ["AMX-BF16", "AVX-512 BF16", "bfloat16 tensor cores"])
def test_with_fast_bfloat16_it_is_timed_beside_float32(tmp_path, monkeypatch, hardware):
    result, calls = _calibrate(tmp_path, monkeypatch, hardware)
    assert any(s.precision == "bfloat16" for s in calls)
    assert result.bf16_speedup == pytest.approx(3.0)


def test_time_bf16_overrides_the_hardware(tmp_path, monkeypatch):
    forced, _ = _calibrate(tmp_path, monkeypatch, None, time_bf16=True)
    assert forced.bf16_speedup == pytest.approx(3.0)
    skipped, calls = _calibrate(tmp_path, monkeypatch, "AMX-BF16", time_bf16=False)
    assert skipped.bf16_speedup is None and not any(s.precision == "bfloat16" for s in calls)


def _calibration(speedup: float | None) -> TextureCalibration:
    return TextureCalibration(
        batch_size=2, channels_last=True, threads=1, images_per_second=3.4,
        bf16_speedup=speedup, key={}, measured=[],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("speedup", "hardware", "said"),
    [
        (None, None, "bfloat16 not timed (no fast bfloat16 here)"),
        (3.87, "AMX-BF16", "bfloat16 3.87x (AMX-BF16)"),
    ],
)
def test_calibrate_says_whether_bfloat16_was_timed(monkeypatch, capsys, speedup, hardware, said):
    monkeypatch.setattr(cal, "fast_bf16", lambda device=None: hardware)
    monkeypatch.setattr(cal, "calibrate_texture", lambda **kw: _calibration(speedup))
    args = argparse.Namespace(show=False, device="cpu", tile_size=256, images=8, cache_dir=None)
    assert cli._cmd_calibrate(args) == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        "256x256 tiles: batch 2, channels_last True, 1 torch thread(s) per task: "
        f"3.40 images/s in float32; {said}"
    )


def test_the_run_note_points_at_calibrate_when_bfloat16_was_not_timed(monkeypatch):
    monkeypatch.setattr(cal, "fast_bf16", lambda device=None: "AMX-BF16")
    monkeypatch.setattr(cal, "read_calibration", lambda **kw: _calibration(None))
    params = argparse.Namespace(device="cpu", texture_precision="float32", tile_size=256)
    note = cli._bf16_note(params)
    assert note.startswith("This device has fast bfloat16 (AMX-BF16); 'microscale calibrate'")
    assert "save about" not in note
