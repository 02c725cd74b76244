"""Metric MDS (metric_mds.py): stress, classical MDS, SMACOF, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist, squareform
from scipy.stats import ortho_group
from sklearn.manifold import MDS, ClassicalMDS
from sklearn.manifold import smacof as sklearn_smacof
from threadpoolctl import threadpool_limits

import microscale
from microscale.metric_mds import (
    MDSFit,
    MDSInfo,
    classical_mds,
    mds,
    mds_with_info,
    smacof,
    stress,
)

CPU = "cpu"


def _fit(D, n_components, **kwargs):
    """(embedding, info) of one dimension, or ({k: X}, {k: info}) of several."""
    fit = mds_with_info(D, n_components, **kwargs)
    if isinstance(n_components, int):
        return fit.embeddings[n_components], fit.info[n_components]
    return fit.embeddings, fit.info


def noisy_distances(n: int = 120, seed: int = 0) -> np.ndarray:
    """Distances of 5-D Gaussian points, each multiplied by a symmetric factor in [0.8, 1.2]:
    not Euclidean in any dimension."""
    rng = np.random.default_rng(seed)
    D = squareform(pdist(rng.normal(size=(n, 5))))
    factor = rng.uniform(0.8, 1.2, size=(n, n))
    D *= (factor + factor.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


def curved_manifold_distances(n: int = 150, seed: int = 0) -> np.ndarray:
    """Chordal distances of a noisy swiss roll whose layers also wave in a 4th dimension."""
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    h = 10.0 * rng.uniform(size=n)
    points = np.stack([t * np.cos(t), h, t * np.sin(t), 3.0 * np.sin(2 * t)], axis=1)
    points += 0.2 * rng.normal(size=points.shape)
    return squareform(pdist(points))


def sklearn_mds(D: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's metric MDS in its best setting (classical start, one run)."""
    est = MDS(
        n_components=k,
        metric_mds=True,
        metric="precomputed",
        init="classical_mds",
        n_init=1,
        max_iter=300,
        eps=1e-6,
        random_state=0,
        normalized_stress=False,
    )
    with threadpool_limits(1):
        return est.fit_transform(D)


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    return noisy_distances()


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


def non_euclidean_distances() -> np.ndarray:
    rng = np.random.default_rng(0)
    A = rng.uniform(1.0, 2.0, size=(10, 10))
    D = np.triu(A, 1)
    return D + D.T


def assert_not_worse(ours: float, theirs: float) -> None:
    assert ours <= theirs * (1 + 1e-6) + 1e-12, (ours, theirs)


# --------------------------------------------------------------------------- stress


def test_stress_matches_pdist_formula(noisy: np.ndarray) -> None:
    X = np.random.default_rng(1).normal(size=(noisy.shape[0], 3))
    d = squareform(noisy, checks=False)
    expected = np.sqrt(np.sum((d - pdist(X)) ** 2) / np.sum(d**2))
    assert stress(noisy, X) == pytest.approx(expected, rel=1e-12)


def test_stress_blocked_equals_unblocked(monkeypatch: pytest.MonkeyPatch, noisy) -> None:
    X = np.random.default_rng(2).normal(size=(noisy.shape[0], 2))
    whole = stress(noisy, X)
    monkeypatch.setattr("microscale.metric_mds._STRESS_BLOCK", 7)
    assert stress(noisy, X) == pytest.approx(whole, rel=1e-12)


def test_stress_is_zero_for_an_exact_configuration() -> None:
    X = np.random.default_rng(3).normal(size=(40, 3))
    assert stress(cdist(X, X), X) == pytest.approx(0.0, abs=1e-14)


def test_stress_is_invariant_to_rotation_reflection_translation(noisy) -> None:
    X = np.random.default_rng(4).normal(size=(noisy.shape[0], 3))
    Q = ortho_group.rvs(3, random_state=5)
    reflect = np.diag([-1.0, 1.0, 1.0])
    moved = X @ Q @ reflect + np.array([3.0, -1.0, 7.0])
    assert stress(noisy, moved) == pytest.approx(stress(noisy, X), rel=1e-12)


def test_stress_accepts_torch_tensors(noisy) -> None:
    X = np.random.default_rng(6).normal(size=(noisy.shape[0], 2))
    assert stress(torch.from_numpy(noisy), torch.from_numpy(X)) == stress(noisy, X)


# --------------------------------------------------------------------------- classical MDS


@pytest.mark.parametrize("n", [60, 250])  # dense eigh and Lanczos (eigsh) paths
def test_classical_mds_recovers_euclidean_configuration(n: int) -> None:
    points = np.random.default_rng(7).normal(size=(n, 3)) * [3.0, 2.0, 1.0]
    D = cdist(points, points)
    X = classical_mds(D, 3, device=CPU)
    assert X.shape == (n, 3)
    assert X.dtype == np.float64
    np.testing.assert_allclose(cdist(X, X), D, atol=1e-9)


@pytest.mark.parametrize("n", [60, 250])
def test_classical_mds_equals_full_eigh_and_sklearn(n: int) -> None:
    D = noisy_distances(n, seed=8)
    k = 4
    X, w = classical_mds(D, k, device=CPU, return_eigenvalues=True)

    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    w_full, U_full = np.linalg.eigh(B)
    np.testing.assert_allclose(w, w_full[::-1][:k], rtol=1e-9)
    U = X / np.sqrt(w)
    # eigenvectors agree up to sign: |<u_ours, u_numpy>| = 1
    inner = np.abs(np.sum(U * U_full[:, ::-1][:, :k], axis=0))
    np.testing.assert_allclose(inner, 1.0, atol=1e-8)

    X_sk = ClassicalMDS(n_components=k, metric="precomputed").fit_transform(D)
    np.testing.assert_allclose(X, X_sk, atol=1e-8)  # same sign convention as svd_flip


def test_classical_mds_is_deterministic_with_sign_convention() -> None:
    D = noisy_distances(300, seed=9)
    X1 = classical_mds(D, 3, device=CPU)
    X2 = classical_mds(D, 3, device=CPU)
    np.testing.assert_array_equal(X1, X2)
    rows = np.argmax(np.abs(X1), axis=0)
    assert np.all(X1[rows, np.arange(3)] > 0)


def test_classical_mds_clips_negative_eigenvalues() -> None:
    D = non_euclidean_distances()
    X, w = classical_mds(D, 9, device=CPU, return_eigenvalues=True)
    assert w[-1] < -1e-3  # D is not Euclidean in 9 dimensions
    assert np.all(np.diff(w) <= 0)
    np.testing.assert_array_equal(X[:, w < 0], 0.0)
    assert np.all(np.isfinite(X))


def test_mds_reports_clipped_dimensions_and_still_uses_them() -> None:
    D = non_euclidean_distances()
    X, info = _fit(D, 9, device=CPU, random_state=0)
    assert info.n_clipped == int(np.sum(info.eigenvalues < 0)) >= 1
    assert np.all(np.isfinite(X))
    # the clipped start columns get small random values, so SMACOF may use those dimensions
    assert np.all(np.any(X[:, info.eigenvalues < 0] != 0.0, axis=0))
    _, info_7 = _fit(D, 7, device=CPU)
    assert_not_worse(info.stress, info_7.stress)


def test_classical_mds_all_zero_distances() -> None:
    X, w = classical_mds(np.zeros((5, 5)), 2, device=CPU, return_eigenvalues=True)
    np.testing.assert_array_equal(X, 0.0)
    np.testing.assert_array_equal(w, 0.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mds_stress_not_higher_than_sklearn_noisy(noisy, k: int) -> None:
    X = mds(noisy, k, device=CPU)
    assert X.shape == (noisy.shape[0], k)
    assert_not_worse(stress(noisy, X), stress(noisy, sklearn_mds(noisy, k)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mds_stress_not_higher_than_sklearn_curved_manifold(k: int) -> None:
    D = curved_manifold_distances()
    X = mds(D, k, device=CPU)
    assert_not_worse(stress(D, X), stress(D, sklearn_mds(D, k)))


def test_smacof_not_higher_than_sklearn_smacof_from_the_same_start(noisy) -> None:
    X0 = np.random.default_rng(10).normal(size=(noisy.shape[0], 2))
    X, sigma, n_iter = smacof(noisy, X0, device=CPU)
    with threadpool_limits(1):
        X_sk, _ = sklearn_smacof(
            noisy, n_components=2, init=X0, n_init=1, max_iter=300, eps=1e-6, metric=True
        )
    assert sigma == pytest.approx(stress(noisy, X), rel=1e-12)
    assert 1 <= n_iter <= 300
    assert_not_worse(sigma, stress(noisy, X_sk))


def test_smacof_stress_never_increases(noisy) -> None:
    X0 = classical_mds(noisy, 2, device=CPU)
    sigmas = [smacof(noisy, X0, max_iter=m, eps=0.0, device=CPU)[1] for m in range(1, 60, 4)]
    assert sigmas[0] < stress(noisy, X0)
    assert np.all(np.diff(sigmas) <= 1e-6 * sigmas[0])


def test_smacof_returns_the_start_when_it_is_already_exact() -> None:
    points = np.random.default_rng(11).normal(size=(50, 2))
    D = cdist(points, points)
    X, sigma, _ = smacof(D, points, device=CPU)
    assert sigma < 1e-12
    np.testing.assert_allclose(X, points - points.mean(axis=0), atol=1e-12)


def test_mds_on_euclidean_distances_is_exact() -> None:
    points = np.random.default_rng(12).normal(size=(80, 3))
    D = cdist(points, points)
    X, info = _fit(D, 3, device=CPU)
    assert info.stress < 1e-10
    np.testing.assert_allclose(cdist(X, X), D, atol=1e-8)


# --------------------------------------------------------------------------- mds API


def test_mds_several_dimensions_equal_separate_calls(noisy) -> None:
    together = mds(noisy, [3, 1, 2, 3], device=CPU)
    assert list(together) == [3, 1, 2]  # order kept, duplicates dropped
    for k, X in together.items():
        np.testing.assert_allclose(X, mds(noisy, k, device=CPU), atol=1e-5)


def test_mds_return_info(noisy) -> None:
    X, info = _fit(noisy, 2, device=CPU)
    assert isinstance(info, MDSInfo)
    assert info.stress == pytest.approx(stress(noisy, X), rel=1e-12)
    assert info.converged and 2 <= info.n_iter <= 300
    np.testing.assert_allclose(
        info.eigenvalues, classical_mds(noisy, 2, device=CPU, return_eigenvalues=True)[1]
    )
    assert info.n_clipped == 0

    embeddings, infos = _fit(noisy, (1, 2), device=CPU)
    assert set(embeddings) == set(infos) == {1, 2}
    assert infos[2].stress < infos[1].stress


def test_mds_is_deterministic_and_centred(noisy) -> None:
    X1 = mds(noisy, 2, device=CPU)
    X2 = mds(noisy, 2, device=CPU)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_allclose(X1.mean(axis=0), 0.0, atol=1e-9)


def test_mds_accepts_torch_tensor(noisy) -> None:
    np.testing.assert_array_equal(
        mds(torch.from_numpy(noisy), 2, device=CPU), mds(noisy, 2, device=CPU)
    )


def test_mds_from_init_continues_a_previous_embedding(noisy) -> None:
    X1, info1 = _fit(noisy, 2, device=CPU, max_iter=5)
    X2, info2 = _fit(noisy, 2, init=X1, device=CPU)
    assert info2.stress < info1.stress
    _, info_full = _fit(noisy, 2, device=CPU)
    assert info2.stress == pytest.approx(info_full.stress, rel=1e-3)


def test_mds_n_init_keeps_the_best_run(noisy) -> None:
    _, info1 = _fit(noisy, 1, device=CPU)
    X_a, info4 = _fit(noisy, 1, n_init=4, random_state=0, device=CPU)
    X_b = mds(noisy, 1, n_init=4, random_state=0, device=CPU)
    assert info4.stress <= info1.stress
    np.testing.assert_array_equal(X_a, X_b)


def test_mds_all_zero_distances_give_zero_embedding() -> None:
    X, info = _fit(np.zeros((6, 6)), 2, device=CPU)
    np.testing.assert_array_equal(X, 0.0)
    assert info.stress == 0.0
    assert smacof(np.zeros((6, 6)), np.ones((6, 2)), device=CPU)[1] == 0.0


def test_lazy_exports() -> None:
    assert microscale.mds is mds
    assert microscale.classical_mds is classical_mds
    assert microscale.stress is stress


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("D", "match"),
    [
        (np.zeros((3, 4)), r"must be square, of shape \(n, n\)\. Got shape \(3, 4\)"),
        (np.zeros((2, 2, 2)), r"must be square"),
        (np.zeros((1, 1)), r"at least 2 points"),
        (np.array([["a", "b"], ["c", "d"]]), r"must hold real numbers"),
    ],
)
def test_distance_matrix_shape_and_type_errors(D: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mds(D, 1, device=CPU)
    with pytest.raises(ValueError, match=match):
        stress(D, np.zeros((D.shape[0], 1)))


def test_distance_matrix_nan_inf_negative_errors(noisy) -> None:
    D = noisy.copy()
    D[0, 1] = D[1, 0] = D[2, 3] = np.nan
    with pytest.raises(ValueError, match="The distance matrix contains 3 NaN entries; remove"):
        mds(D, 2, device=CPU)
    D = noisy.copy()
    D[0, 1] = np.inf
    with pytest.raises(ValueError, match="contains 1 infinite entries"):
        classical_mds(D, 2, device=CPU)
    D = noisy.copy()
    D[0, 1] = D[1, 0] = -0.5
    with pytest.raises(ValueError, match="contains 2 negative entries"):
        smacof(D, np.zeros((D.shape[0], 2)), device=CPU)


def test_distance_matrix_diagonal_and_symmetry_errors(noisy) -> None:
    D = noisy.copy()
    D[3, 3] = 0.1
    with pytest.raises(ValueError, match="must have a zero diagonal, but 1 diagonal entries"):
        mds(D, 2, device=CPU)
    D = noisy.copy()
    D[0, 1] += 0.1
    with pytest.raises(ValueError, match=r"must be symmetric.*\(D \+ D\.T\) / 2"):
        mds(D, 2, device=CPU)


def test_tiny_asymmetry_and_diagonal_are_tolerated(noisy) -> None:
    D = noisy.astype(np.float32).astype(np.float64)
    D[0, 1] *= 1 + 1e-7
    D[2, 2] = 1e-9
    np.testing.assert_allclose(mds(D, 2, device=CPU), mds(noisy, 2, device=CPU), atol=1e-4)


@pytest.mark.parametrize(
    ("n_components", "match"),
    [
        (0, r"The 'n_components' parameter must be a positive int\. Got 0 instead\."),
        (-1, r"must be a positive int\. Got -1 instead\."),
        (2.0, r"must be a positive int\. Got 2\.0 instead\."),
        (True, r"must be a positive int\. Got True instead\."),
        ("2", r"must be a positive int\. Got '2' instead\."),
        (120, r"must be less than the number of points \(120\)\. Got 120 instead\."),
        ([], r"non-empty sequence"),
        ([1, 0], r"Got 0 instead"),
    ],
)
def test_n_components_errors(noisy, n_components, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mds(noisy, n_components, device=CPU)


def test_classical_mds_n_components_error(noisy) -> None:
    with pytest.raises(ValueError, match=r"must be a positive int\. Got 0 instead\."):
        classical_mds(noisy, 0, device=CPU)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iter": 0}, r"The 'max_iter' parameter must be a positive int\. Got 0 instead\."),
        ({"n_init": 0}, r"The 'n_init' parameter must be a positive int\. Got 0 instead\."),
        ({"eps": -1.0}, r"The 'eps' parameter must be a non-negative float\. Got -1\.0"),
        ({"eps": float("nan")}, r"The 'eps' parameter must be a non-negative float"),
    ],
)
def test_iteration_parameter_errors(noisy, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mds(noisy, 2, device=CPU, **kwargs)


def test_init_errors(noisy) -> None:
    n = noisy.shape[0]
    with pytest.raises(ValueError, match=r"'init' array has 3 columns but 'n_components' is 2"):
        mds(noisy, 2, init=np.zeros((n, 3)), device=CPU)
    with pytest.raises(
        ValueError, match=rf"'init' array has 5 rows but the distance matrix has {n}"
    ):
        mds(noisy, 2, init=np.zeros((5, 2)), device=CPU)
    with pytest.raises(ValueError, match=r"'init' array must be 2-D"):
        mds(noisy, 2, init=np.zeros(n), device=CPU)
    with pytest.raises(ValueError, match=r"needs a single int 'n_components'"):
        mds(noisy, [1, 2], init=np.zeros((n, 2)), device=CPU)
    bad = np.zeros((n, 2))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'init' array contains 1 NaN or infinite entries"):
        mds(noisy, 2, init=bad, device=CPU)


def test_smacof_and_stress_configuration_errors(noisy) -> None:
    with pytest.raises(ValueError, match=r"'X' array has 3 rows but the distance matrix has 120"):
        stress(noisy, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"'X0' array has 3 rows"):
        smacof(noisy, np.zeros((3, 2)), device=CPU)


def test_stress_of_all_zero_distances_is_an_error() -> None:
    with pytest.raises(ValueError, match="The stress is undefined when every distance is 0"):
        stress(np.zeros((4, 4)), np.zeros((4, 2)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_is_an_error(noisy) -> None:
    with pytest.raises(ValueError, match=r"'device' parameter is 'cuda' but torch sees no CUDA"):
        mds(noisy, 2, device="cuda")


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    D = noisy_distances(300, seed=13)
    on_cpu, info_cpu = _fit(D, [1, 2, 3], device="cpu")
    on_gpu, info_gpu = _fit(D, [1, 2, 3], device="cuda")
    for k in (1, 2, 3):
        assert info_gpu[k].stress == pytest.approx(info_cpu[k].stress, rel=1e-4)
        np.testing.assert_allclose(
            cdist(on_gpu[k], on_gpu[k]), cdist(on_cpu[k], on_cpu[k]), atol=1e-3 * D.max()
        )
    np.testing.assert_allclose(
        np.abs(classical_mds(D, 3, device="cuda")),
        np.abs(classical_mds(D, 3, device="cpu")),
        atol=1e-8,
    )


def test_mds_with_info_has_one_return_type(noisy) -> None:
    one = mds_with_info(noisy, 2, device=CPU)
    several = mds_with_info(noisy, [1, 2], device=CPU)
    for fit in (one, several):
        assert isinstance(fit, MDSFit)
        assert isinstance(fit.embeddings, dict) and isinstance(fit.info, dict)
        assert all(isinstance(i, MDSInfo) for i in fit.info.values())
    assert list(one.embeddings) == [2] and list(several.embeddings) == [1, 2]
    np.testing.assert_array_equal(one.embeddings[2], mds(noisy, 2, device=CPU))
    np.testing.assert_array_equal(several.embeddings[2], one.embeddings[2])
    assert one.info[2].stress == pytest.approx(stress(noisy, one.embeddings[2]))


def test_mds_return_info_is_deprecated_but_still_works(noisy) -> None:
    with pytest.warns(FutureWarning, match="use mds_with_info"):
        X, info = mds(noisy, 2, device=CPU, return_info=True)
    fit = mds_with_info(noisy, 2, device=CPU)
    np.testing.assert_array_equal(X, fit.embeddings[2])
    assert (info.stress, info.n_iter) == (fit.info[2].stress, fit.info[2].n_iter)
    np.testing.assert_array_equal(info.eigenvalues, fit.info[2].eigenvalues)
