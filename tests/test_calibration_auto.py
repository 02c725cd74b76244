"""The one-off calibration a pipeline run makes on a machine without one
(calibration.ensure_calibration): measured once, then read from the cache."""

from __future__ import annotations

import pytest

from microscale import calibration as cal
from microscale.calibration import ensure_calibration, read_calibration
from tests.test_calibration import FakeClock, cost, fake_forward


@pytest.fixture
def measurements(monkeypatch, tmp_path) -> list[dict]:
    """calibrate_texture as it is, with a fake forward pass and clock (no network run)."""
    calls: list[dict] = []
    real = cal.calibrate_texture
    clock = FakeClock()
    forward, _ = fake_forward(clock, cost)

    def measure(**kwargs):
        calls.append(kwargs)
        return real(**kwargs, batch_sizes=(1, 2), n_images=2, timer=clock, forward=forward)

    monkeypatch.setattr(cal, "calibrate_texture", measure)
    monkeypatch.setattr(cal, "fast_bf16", lambda device=None: None)
    return calls


def test_measured_once_then_read_from_the_cache(tmp_path, measurements):
    lines: list[str] = []
    first = ensure_calibration(
        device="cpu", image_size=32, cache_dir=tmp_path, on_start=lines.append
    )
    assert (first.batch_size, first.channels_last) == (2, True)
    assert len(measurements) == 1 and measurements[0]["weights"] == "vgg19-normalized"
    assert lines == [
        "No texture calibration for this machine and 32x32 tiles: measuring the fastest "
        "batch size, memory format and threads once (as 'microscale calibrate' does; cached "
        "for later runs)."
    ]
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) == first
    again = ensure_calibration(
        device="cpu", image_size=32, cache_dir=tmp_path, on_start=lines.append
    )
    assert again == first and len(measurements) == 1 and len(lines) == 1  # nothing measured
    # another tile size is another measurement
    ensure_calibration(device="cpu", image_size=64, cache_dir=tmp_path)
    assert [m["image_size"] for m in measurements] == [32, 64]


def test_random_weights_are_not_measured(tmp_path, measurements):
    """A random backbone is another, smaller network: its timings would be filed under
    this machine's key and mislead the VGG-19 runs."""
    assert (
        ensure_calibration(device="cpu", image_size=32, weights="random:3", cache_dir=tmp_path)
        is None
    )
    assert measurements == []
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) is None
