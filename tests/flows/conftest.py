"""Fixtures of the flow tests."""

from __future__ import annotations

import pytest

from microscale import calibration


@pytest.fixture(autouse=True)
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """No flow test measures this machine (about a minute with VGG-19, and a write to the
    user's cache): the pipeline's one-off calibration records its arguments here instead.
    (Module-scoped runs of the real flow pass ``calibrate=False``.)"""
    calls: list[dict] = []
    monkeypatch.setattr(calibration, "ensure_calibration", lambda **kw: calls.append(kw))
    return calls
