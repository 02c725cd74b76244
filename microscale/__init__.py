"""microscale: low-dimensional texture maps of micrograph archives.

Implements Lubbers, Lookman & Barros, "Inferring low-dimensional microstructure
representations using convolutional neural networks", Phys. Rev. E 96, 052111 (2017),
doi:10.1103/PhysRevE.96.052111.

Importing this package is cheap: it never imports torch. The public functions are
loaded on first use from the module that owns them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that owns it
_FUNCTIONS = {
    "texture_vectors": "microscale.texture",
    "power_spectra": "microscale.spectrum",
    "pairwise_distances": "microscale.distance",
    "mds": "microscale.metric_mds",
    "mds_with_info": "microscale.metric_mds",
    "classical_mds": "microscale.metric_mds",
    "stress": "microscale.metric_mds",
    "landmark_mds": "microscale.landmark",
    "normalize_intensity": "microscale.intensity",
    "load_weights": "microscale.weights",
    "fetch_weights": "microscale.weights",
    "build_dataset": "microscale.results",
    "read_micrograph": "microscale.io",
    "similar": "microscale.search",
    "verify_store": "microscale.stages.verify",
}
_SUBMODULES = {
    "synth",
    "intensity",
    "texture",
    "spectrum",
    "distance",
    "errors",
    "manifold",
    "metric_mds",
    "landmark",
    "stages",
    "evaluate",
    "results",
    "weights",
    "paper",
    "io",
    "demo",
    "sketch",
    "search",
}

__all__ = sorted([*_FUNCTIONS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(import_module(_FUNCTIONS[name]), name)
    if name in _SUBMODULES:
        return import_module(f"microscale.{name}")
    raise AttributeError(f"module 'microscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
