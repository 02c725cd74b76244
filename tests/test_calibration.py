"""The texture calibration: the choice follows the measurements; the cache is keyed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microscale import calibration as cal
from microscale.calibration import TextureSetting, calibrate_texture, read_calibration


class FakeClock:
    """A clock that only moves when the fake forward pass says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_forward(clock: FakeClock, seconds_per_image):
    calls = []

    def forward(setting: TextureSetting, images: np.ndarray) -> None:
        calls.append(setting)
        clock.now += seconds_per_image(setting) * len(images)

    return forward, calls


def cost(setting: TextureSetting) -> float:
    """Batch 2 channels-last fastest; fewer threads better per core; bf16 3x faster."""
    base = {1: 1.0, 2: 0.5, 4: 0.8}[setting.batch_size]
    if setting.channels_last:
        base *= 0.9
    if setting.precision == "bfloat16":
        base /= 3.0
    if setting.threads is not None:  # t threads: 1.5x faster per doubling, not 2x
        base /= 1.5 ** np.log2(setting.threads)
    return base


def test_choice_follows_the_measurements(tmp_path, monkeypatch):
    monkeypatch.setattr(cal.os, "cpu_count", lambda: 4)
    clock = FakeClock()
    forward, calls = fake_forward(clock, cost)
    result = calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1, 2, 4, 8), n_images=4, repeat=2,
        cache_dir=tmp_path, timer=clock, forward=forward, time_bf16=True,
    )  # fmt: skip
    assert (result.batch_size, result.channels_last) == (2, True)
    assert result.threads == 1  # 1.5x per doubling: one thread per task gives most per core
    assert result.bf16_speedup == pytest.approx(3.0)
    assert result.images_per_second == pytest.approx(1 / (0.5 * 0.9))
    assert not any(s.batch_size == 8 for s in calls)  # more than n_images: skipped


def test_a_different_measurement_gives_another_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(cal.os, "cpu_count", lambda: 4)
    clock = FakeClock()

    def nchw_batch4(s: TextureSetting) -> float:  # batch 4 NCHW fastest, threads scale fully
        t = {1: 1.0, 2: 0.9, 4: 0.5}[s.batch_size] * (1.2 if s.channels_last else 1.0)
        return t / (s.threads or 1) * 0.99 ** (s.threads or 1)

    forward, _ = fake_forward(clock, nchw_batch4)
    result = calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1, 2, 4), n_images=4, cache_dir=tmp_path,
        timer=clock, forward=forward,
    )  # fmt: skip
    assert (result.batch_size, result.channels_last, result.threads) == (4, False, 4)


def test_cache_written_read_and_invalidated(tmp_path, monkeypatch):
    clock = FakeClock()
    forward, _ = fake_forward(clock, cost)
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) is None
    made = calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1, 2), n_images=2, cache_dir=tmp_path,
        timer=clock, forward=forward,
    )  # fmt: skip
    assert (tmp_path / cal.CACHE_FILE).is_file()
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) == made
    # another image size, another torch version: not this calibration
    assert read_calibration(device="cpu", image_size=64, cache_dir=tmp_path) is None
    monkeypatch.setattr(cal, "machine_key", lambda **kw: {**made.key, "torch": "0.0.0"})
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) is None
    monkeypatch.undo()
    # a second size is added beside the first, not over it
    calibrate_texture(
        device="cpu", image_size=64, batch_sizes=(1,), n_images=1, cache_dir=tmp_path,
        timer=clock, forward=forward,
    )  # fmt: skip
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) == made
    entries = json.loads((tmp_path / cal.CACHE_FILE).read_text())["entries"]
    assert len(entries) == 2


def test_unreadable_cache_is_ignored(tmp_path):
    (tmp_path / cal.CACHE_FILE).write_text("{not json")
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) is None


def test_real_forward_runs(tmp_path):
    result = calibrate_texture(
        device="cpu", image_size=32, weights="random:0", batch_sizes=(1, 2), n_images=2,
        repeat=1, cache_dir=tmp_path,
    )  # fmt: skip
    assert result.batch_size in (1, 2) and result.images_per_second > 0
    assert read_calibration(device="cpu", image_size=32, cache_dir=tmp_path) == result


def test_batch_sizes_must_fit(tmp_path):
    with pytest.raises(ValueError, match="at most n_images"):
        calibrate_texture(device="cpu", image_size=32, batch_sizes=(8,), n_images=2,
                          cache_dir=tmp_path, forward=lambda s, x: None)  # fmt: skip
