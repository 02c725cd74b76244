"""Landmark MDS and out-of-sample placement (landmark.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist, squareform

from microscale.landmark import choose_landmarks, landmark_mds
from microscale.metric_mds import (
    mds,
    stress,
    stress_from_rows,
    stresses_from_rows,
)

CPU = "cpu"


def noisy_distances(n: int = 120, seed: int = 0) -> np.ndarray:
    """Distances of 5-D Gaussian points, each multiplied by a symmetric factor in [0.8, 1.2]:
    not Euclidean in any dimension."""
    rng = np.random.default_rng(seed)
    D = squareform(pdist(rng.normal(size=(n, 5))))
    factor = rng.uniform(0.8, 1.2, size=(n, n))
    D *= (factor + factor.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Run this module's torch work on one thread, restoring the setting afterwards.

    The matrices here are tiny (n <= 300): intra-op threading only adds OpenMP barriers,
    and on a shared 2-core box each barrier can wait a whole scheduler slice for a
    descheduled thread (measured: 0.01 s -> 2.4 s for 60 iterations at n = 120).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- landmark MDS


@pytest.mark.parametrize("m", [4, 10, 60])
def test_landmark_mds_recovers_euclidean_configuration(m):
    points = np.random.default_rng(1).normal(size=(300, 3))
    idx = choose_landmarks(300, m, random_state=0)
    D_rest = cdist(points, points[idx])
    X = landmark_mds(D_rest[idx], D_rest, 3, landmarks=idx, device=CPU)
    assert X.shape == (300, 3)
    assert stress_from_rows(lambda i0, i1: cdist(points[i0:i1], points), X) < 1e-6


def test_landmark_triangulation_alone_is_exact_for_euclidean_distances():
    points = np.random.default_rng(2).normal(size=(200, 2))
    idx = choose_landmarks(200, 20, random_state=1)
    D_rest = cdist(points, points[idx])
    X = landmark_mds(D_rest[idx], D_rest, 2, landmarks=idx, n_refine=0, device=CPU)
    assert stress(cdist(points, points), X) < 1e-6


def test_landmark_mds_stress_close_to_full_mds():
    D = noisy_distances(600, seed=3)
    idx = choose_landmarks(600, 150, random_state=0)
    for k in (2, 3):
        full = stress(D, mds(D, k, device=CPU))
        X = landmark_mds(D[np.ix_(idx, idx)], D[:, idx], k, landmarks=idx, device=CPU)
        assert full <= stress(D, X) <= 1.5 * full


def test_landmark_mds_places_landmarks_at_their_own_coordinates():
    D = noisy_distances(80, seed=4)
    X = landmark_mds(D, D, 2, n_refine=500, eps=1e-9, max_iter=3000, device=CPU)
    Y, placed = X[:80], X[80:]
    np.testing.assert_allclose(placed, Y, atol=1e-2 * np.abs(Y).max())


def test_landmark_mds_layouts_agree():
    """Landmarks given by index in an (n, m) matrix == landmarks first, then the rest."""
    D = noisy_distances(120, seed=5)
    idx = np.array([3, 50, 7, 99, 20, 64, 11, 80, 31, 42])
    rest = np.setdiff1d(np.arange(120), idx)
    X = landmark_mds(D[np.ix_(idx, idx)], D[:, idx], 2, landmarks=idx, device=CPU)
    Z = landmark_mds(D[np.ix_(idx, idx)], D[np.ix_(rest, idx)], 2, device=CPU)
    np.testing.assert_allclose(X[np.concatenate([idx, rest])], Z)


def test_stress_from_rows_equals_stress():
    D = noisy_distances(130, seed=6)
    X = mds(D, 2, device=CPU)
    for batch_size in (1, 7, 130, 1000):
        assert stress_from_rows(lambda i0, i1: D[i0:i1], X, batch_size=batch_size) == pytest.approx(
            stress(D, X), rel=1e-12
        )


def test_stresses_from_rows_reads_each_block_once():
    D = noisy_distances(90, seed=8)
    Xs = [mds(D, k, device=CPU) for k in (1, 2, 3)]
    reads = []

    def rows(i0, i1):
        reads.append((i0, i1))
        return D[i0:i1]

    values = stresses_from_rows(rows, Xs, batch_size=32)
    assert reads == [(0, 32), (32, 64), (64, 90)]
    assert values == pytest.approx([stress(D, X) for X in Xs], rel=1e-12)
    with pytest.raises(ValueError, match="Xs is empty"):
        stresses_from_rows(rows, [])


def test_choose_landmarks_random_and_maxmin():
    points = np.random.default_rng(7).normal(size=(200, 2))
    rand = choose_landmarks(200, 30, random_state=0)
    assert rand.shape == (30,) and np.unique(rand).size == 30
    np.testing.assert_array_equal(rand, choose_landmarks(200, 30, random_state=0))
    idx = choose_landmarks(
        200, 30, random_state=0, D_fn=lambda i: cdist(points[i : i + 1], points)[0]
    )
    assert np.unique(idx).size == 30
    # MaxMin covers the data: its covering radius beats random landmarks'.
    assert cdist(points, points[idx]).min(1).max() < cdist(points, points[rand]).min(1).max()
    # With m = n every point is picked once, even though the last distances are all 0.
    assert (
        np.unique(
            choose_landmarks(20, 20, D_fn=lambda i: cdist(points[i : i + 1], points[:20])[0])
        ).size
        == 20
    )


def test_landmark_validation():
    D = noisy_distances(40, seed=8)
    with pytest.raises(ValueError, match="'D_rest' array must have shape"):
        landmark_mds(D[:10, :10], D[:, :9], 2, device=CPU)
    with pytest.raises(ValueError, match="'D_rest' array contains 1 negative"):
        R = D[:, :10].copy()
        R[0, 0] = -1.0
        landmark_mds(D[:10, :10], R, 2, device=CPU)
    with pytest.raises(ValueError, match="'n_components' parameter must be less than"):
        landmark_mds(D[:10, :10], D[:, :10], 10, device=CPU)
    with pytest.raises(ValueError, match="'n_refine' parameter must be a non-negative int"):
        landmark_mds(D[:10, :10], D[:, :10], 2, n_refine=-1, device=CPU)
    with pytest.raises(ValueError, match="'landmarks' parameter must be 10 integer"):
        landmark_mds(D[:10, :10], D[:, :10], 2, landmarks=np.arange(9), device=CPU)
    with pytest.raises(ValueError, match="'landmarks' parameter must hold 10 distinct"):
        landmark_mds(D[:10, :10], D[:, :10], 2, landmarks=np.zeros(10, int), device=CPU)
    with pytest.raises(ValueError, match="'m' parameter must be at most"):
        choose_landmarks(5, 6)
    with pytest.raises(ValueError, match="'D_fn' callable must return"):
        choose_landmarks(5, 2, D_fn=lambda i: np.zeros(4))
    X = np.zeros((40, 2))
    with pytest.raises(ValueError, match=r"must return 20 rows for rows\(0, 20\)"):
        stress_from_rows(lambda i0, i1: D[i0 : i0 + 10], X, batch_size=20)
    with pytest.raises(ValueError, match="must have a zero diagonal"):
        stress_from_rows(lambda i0, i1: D[i0:i1] + 1.0, X)
    with pytest.raises(ValueError, match="stress is undefined"):
        stress_from_rows(lambda i0, i1: np.zeros((i1 - i0, 40)), X)
