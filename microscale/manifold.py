"""Metric multidimensional scaling, under its old import path (kept for one release).

The code lives in two modules, re-exported here:

- :mod:`microscale.metric_mds` -- classical MDS, SMACOF, :func:`mds` and Kruskal's stress
  (also from row blocks);
- :mod:`microscale.landmark` -- landmark MDS and out-of-sample placement.
"""

from __future__ import annotations

from microscale.landmark import choose_landmarks, landmark_mds, out_of_sample
from microscale.metric_mds import (
    MDSFit,
    MDSInfo,
    classical_mds,
    mds,
    mds_with_info,
    smacof,
    stress,
    stress_from_rows,
    stresses_from_rows,
)

__all__ = [
    "MDSFit",
    "MDSInfo",
    "choose_landmarks",
    "classical_mds",
    "landmark_mds",
    "mds",
    "mds_with_info",
    "out_of_sample",
    "smacof",
    "stress",
    "stress_from_rows",
    "stresses_from_rows",
]
