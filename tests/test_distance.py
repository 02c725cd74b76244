"""Tests for microscale.distance: scipy's cdist and exact float64 differences as oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import microscale
from microscale import distance
from microscale.distance import (
    block_sq_distances,
    cancellation_limits,
    pairwise_distances,
    row_sq_norms,
)

# The requirement: every distance within this relative error of the exact one.
RTOL = 1e-6


def exact_distances(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    """Oracle for near-duplicates: sum of squared differences, in float64, pair by pair."""
    X64 = np.asarray(X, dtype=np.float64)
    Y64 = X64 if Y is None else np.asarray(Y, dtype=np.float64)
    out = np.empty((len(X64), len(Y64)))
    for i, x in enumerate(X64):
        diff = Y64 - x
        out[i] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def assert_close(D: np.ndarray, R: np.ndarray, rtol: float = RTOL) -> None:
    """Elementwise relative error <= rtol; exact zeros must come out exactly zero."""
    assert D.shape == R.shape
    assert np.isfinite(D).all()
    assert (D >= 0).all()
    np.testing.assert_array_equal(D[R == 0], 0.0)
    nz = R > 0
    rel = np.abs(D[nz] - R[nz]) / R[nz]
    assert rel.max(initial=0.0) <= rtol, f"max relative error {rel.max():.3g}"


def near_duplicate_cluster(n: int, d: int, sep: float, seed: int = 0) -> np.ndarray:
    """Positive vectors x0 * (1 + sep * noise): all pairs at relative separation ~ sep."""
    rng = np.random.default_rng(seed)
    x0 = np.abs(rng.standard_normal(d))
    return (x0 * (1.0 + sep * rng.standard_normal((n, d)))).astype(np.float32)


def spread_with_duplicates(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Widely spread positive vectors with planted near-duplicate and duplicate pairs."""
    rng = np.random.default_rng(seed)
    X = np.abs(rng.standard_normal((n, d))) * rng.uniform(0.5, 2.0, (n, 1))
    X[1] = X[0] * (1.0 + 1e-4 * rng.standard_normal(d))
    X[3] = X[2] * (1.0 + 1e-6 * rng.standard_normal(d))
    X[5] = X[4]
    X[7] = X[6] * (1.0 + 1e-3)
    X = X.astype(np.float32)
    X[9] = X[8]  # an exact duplicate in float32 as well
    return X


# --- oracle: scipy cdist on awkward shapes and block sizes -------------------------------


@pytest.mark.parametrize("d", [7, 1000, 20_000])  # float32 path, float64 path, float32 path
@pytest.mark.parametrize("block_size", [1, 3, 4, 13, 50])
def test_x_vs_y_matches_cdist(d: int, block_size: int) -> None:
    rng = np.random.default_rng(d + block_size)
    X = rng.random((10, d)).astype(np.float32)
    Y = rng.random((14, d)).astype(np.float32)
    D = pairwise_distances(X, Y, block_size=block_size)
    assert D.dtype == np.float64
    assert_close(D, cdist(X.astype(np.float64), Y.astype(np.float64)))


@pytest.mark.parametrize(
    "n, block_size", [(1, 1), (2, 1), (37, 1), (37, 5), (37, 36), (37, 37), (37, 64)]
)
def test_symmetric_matches_cdist(n: int, block_size: int) -> None:
    X = np.random.default_rng(n).standard_normal((n, 300)).astype(np.float32)
    D = pairwise_distances(X, block_size=block_size)
    assert np.array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert_close(D, cdist(X.astype(np.float64), X.astype(np.float64)))


def test_large_diagonal_block_is_split_and_stays_exact() -> None:
    # A 300-row diagonal block is halved recursively (300 -> 150 -> 75 rows).
    X = np.random.default_rng(1).random((300, 40)).astype(np.float32)
    D = pairwise_distances(X, block_size=300)
    assert np.array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert_close(D, cdist(X.astype(np.float64), X.astype(np.float64)))
    np.testing.assert_allclose(D, pairwise_distances(X, block_size=7), rtol=2 * RTOL)


def test_y_is_x_is_the_symmetric_case() -> None:
    X = np.random.default_rng(2).random((9, 50)).astype(np.float32)
    np.testing.assert_array_equal(
        pairwise_distances(X, X, block_size=4), pairwise_distances(X, block_size=4)
    )


# --- the accuracy requirement ------------------------------------------------------------


@pytest.mark.parametrize("precision", ["mixed", "float64"])
def test_near_duplicate_cluster(precision: str) -> None:
    # Relative separation 1e-4 at d = 50,000: the naive float32 expansion is off by ~1.
    X = near_duplicate_cluster(12, 50_000, 1e-4)
    D = pairwise_distances(X, block_size=5, precision=precision)
    assert_close(D, exact_distances(X))


def test_naive_float32_expansion_fails_where_we_pass() -> None:
    # Guard that the near-duplicate test is hard: the naive formula loses all digits.
    X = near_duplicate_cluster(6, 50_000, 1e-4)
    t = torch.from_numpy(X)
    sq = (t * t).sum(1)
    naive = torch.sqrt((sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp(min=0)).numpy()
    R = exact_distances(X)
    iu = np.triu_indices(6, 1)
    assert (np.abs(naive[iu] - R[iu]) / R[iu]).max() > 1e-2


def test_near_duplicate_cluster_float64_input() -> None:
    rng = np.random.default_rng(3)
    x0 = np.abs(rng.standard_normal(50_000))
    X = x0 * (1.0 + 1e-4 * rng.standard_normal((8, 50_000)))  # float64, not float32-exact
    assert_close(pairwise_distances(X, block_size=3), exact_distances(X))


@pytest.mark.parametrize("precision", ["mixed", "float64"])
def test_spread_set_with_near_and_exact_duplicates(precision: str) -> None:
    X = spread_with_duplicates(24, 50_000)
    D = pairwise_distances(X, block_size=8, precision=precision)
    R = exact_distances(X)
    assert_close(D, R)
    assert D[4, 5] == 0.0 and D[5, 4] == 0.0
    assert D[8, 9] == 0.0 and D[9, 8] == 0.0
    assert np.array_equal(D, D.T)


def test_exact_duplicates_between_x_and_y_are_zero() -> None:
    X = spread_with_duplicates(12, 20_000)
    Y = X[[5, 0, 9]].copy()
    D = pairwise_distances(X, Y, block_size=4)
    assert D[4, 0] == 0.0 and D[5, 0] == 0.0 and D[0, 1] == 0.0 and D[8, 2] == 0.0
    assert_close(D, exact_distances(X, Y))


def test_tight_clusters_far_from_the_mean_use_the_float64_sub_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two tight clusters: the global mean sits between them, so every within-cluster
    # pair has a large cancellation factor and goes to step 2 as one float64 sub-block.
    rng = np.random.default_rng(4)
    d = 20_000
    a, b = np.abs(rng.standard_normal(d)), np.abs(rng.standard_normal(d))
    X = np.concatenate(
        [a * (1 + 1e-3 * rng.standard_normal((8, d))), b * (1 + 1e-3 * rng.standard_normal((8, d)))]
    ).astype(np.float32)
    calls = []
    original = distance._float64_sub_block

    def spy(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(distance, "_float64_sub_block", spy)
    D = pairwise_distances(X, block_size=16)
    assert calls, "expected the float64 sub-block (step 2) to run"
    assert_close(D, exact_distances(X))


def test_no_negative_or_nan_for_identical_rows() -> None:
    X = np.tile(np.random.default_rng(5).random(30_000, dtype=np.float32), (6, 1))
    D = pairwise_distances(X, block_size=4)
    np.testing.assert_array_equal(D, 0.0)


def test_mixed_equals_float64_precision() -> None:
    X = spread_with_duplicates(16, 30_000, seed=6)
    np.testing.assert_allclose(
        pairwise_distances(X, block_size=6),
        pairwise_distances(X, block_size=6, precision="float64"),
        rtol=2 * RTOL,
    )


# --- the kernel ------------------------------------------------------------------------


def test_kernel_equals_driver() -> None:
    X = near_duplicate_cluster(10, 20_000, 1e-3, seed=7)
    D = pairwise_distances(X, block_size=4)
    center = X.sum(axis=0, dtype=np.float64) / len(X)
    off = block_sq_distances(X[0:4], X[4:8], center=center)
    np.testing.assert_array_equal(np.sqrt(off), D[0:4, 4:8])
    diag = block_sq_distances(X[8:10], center=center)
    np.testing.assert_array_equal(np.sqrt(diag), D[8:10, 8:10])


def test_kernel_without_yb_is_symmetric_with_zero_diagonal() -> None:
    X = np.random.default_rng(8).random((150, 64)).astype(np.float32)
    d2 = block_sq_distances(X, center=X.mean(axis=0, dtype=np.float64))
    assert d2.dtype == np.float64 and d2.shape == (150, 150)
    assert np.array_equal(d2, d2.T)
    np.testing.assert_array_equal(np.diag(d2), 0.0)
    assert_close(np.sqrt(d2), cdist(X.astype(np.float64), X.astype(np.float64)))


def test_kernel_result_does_not_depend_on_the_centre_beyond_rounding() -> None:
    X = near_duplicate_cluster(6, 20_000, 1e-4, seed=9)
    exact = exact_distances(X[:3], X[3:])
    for center in (X.mean(axis=0, dtype=np.float64), np.zeros(20_000), X[0].astype(np.float64)):
        assert_close(np.sqrt(block_sq_distances(X[:3], X[3:], center=center)), exact)


def test_precomputed_norms_give_the_same_block() -> None:
    X = spread_with_duplicates(12, 20_000, seed=15)
    center = X.mean(axis=0, dtype=np.float64)
    xn, yn = row_sq_norms(X[:5], center=center), row_sq_norms(X[5:], center=center)
    np.testing.assert_array_equal(
        block_sq_distances(X[:5], X[5:], center=center, x_sq_norms=xn, y_sq_norms=yn),
        block_sq_distances(X[:5], X[5:], center=center),
    )
    np.testing.assert_array_equal(
        block_sq_distances(X[:5], center=center, x_sq_norms=xn),
        block_sq_distances(X[:5], center=center),
    )
    xn64 = row_sq_norms(X[:5], center=center, precision="float64")
    np.testing.assert_array_equal(
        block_sq_distances(X[:5], center=center, x_sq_norms=xn64, precision="float64"),
        block_sq_distances(X[:5], center=center, precision="float64"),
    )


def test_torch_element_wise_path_matches_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU the element-wise work is torch; run that code on the CPU here. Summation
    # orders differ (norms) and are amplified by F up to F2 in step 2: compare at the
    # requirement, and each against the exact oracle.
    rng = np.random.default_rng(16)
    d = 20_000
    a, b = np.abs(rng.standard_normal(d)), np.abs(rng.standard_normal(d))
    clusters = np.concatenate(
        [a * (1 + 1e-3 * rng.standard_normal((6, d))), b * (1 + 1e-3 * rng.standard_normal((6, d)))]
    ).astype(np.float32)
    data = [clusters, spread_with_duplicates(12, d, seed=17), clusters.astype(np.float64)]
    expected = [pairwise_distances(X, block_size=5) for X in data]
    expected64 = pairwise_distances(data[1], block_size=5, precision="float64")
    monkeypatch.setattr(distance, "_numpy_path", lambda device: False)
    for X, D in zip(data, expected, strict=True):
        np.testing.assert_allclose(pairwise_distances(X, block_size=5), D, rtol=2 * RTOL)
        assert_close(pairwise_distances(X, block_size=5), exact_distances(X))
    np.testing.assert_allclose(
        pairwise_distances(data[1], block_size=5, precision="float64"), expected64, rtol=2 * RTOL
    )


def test_cancellation_limits() -> None:
    f1, f2 = cancellation_limits(305_888)
    assert 9.0 < f1 < 9.2 and f2 > 1e7
    assert cancellation_limits(1000)[0] < 2.0  # float64 from the start at this length
    assert cancellation_limits(10**8)[0] == 32.0  # capped


# --- input types -----------------------------------------------------------------------


def test_float32_and_float64_inputs_agree() -> None:
    X = np.random.default_rng(10).random((11, 20_000)).astype(np.float32)
    np.testing.assert_allclose(
        pairwise_distances(X, block_size=4),
        pairwise_distances(X.astype(np.float64), block_size=4),
        rtol=2 * RTOL,
    )


def test_integer_input_and_read_only_input() -> None:
    X = np.arange(24, dtype=np.int64).reshape(4, 6) ** 2
    R = cdist(X.astype(np.float64), X.astype(np.float64))
    assert_close(pairwise_distances(X), R)
    Xr = X.astype(np.float32)
    Xr.setflags(write=False)
    assert_close(pairwise_distances(Xr, block_size=3), R)


def test_lazy_public_export() -> None:
    assert microscale.pairwise_distances is pairwise_distances


def test_matmul_precision_settings_are_restored() -> None:
    cuda_mm, cpu_mm = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    saved = (cuda_mm.fp32_precision, cpu_mm.fp32_precision)
    try:
        cuda_mm.fp32_precision = "tf32"
        cpu_mm.fp32_precision = "none"
        X = near_duplicate_cluster(5, 20_000, 1e-4, seed=11)
        assert_close(pairwise_distances(X, block_size=2), exact_distances(X))
        assert (cuda_mm.fp32_precision, cpu_mm.fp32_precision) == ("tf32", "none")
    finally:
        cuda_mm.fp32_precision, cpu_mm.fp32_precision = saved


def test_kernel_from_several_threads() -> None:
    # Dask runs kernels in threads; the scoped matmul setting must survive that.
    from concurrent.futures import ThreadPoolExecutor

    X = near_duplicate_cluster(16, 20_000, 1e-4, seed=19)
    center = X.mean(axis=0, dtype=np.float64)
    pairs = [(X[i : i + 4], X[j : j + 4]) for i in range(0, 16, 4) for j in range(0, 16, 4)]
    serial = [block_sq_distances(a, b, center=center) for a, b in pairs]
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda p: block_sq_distances(*p, center=center), pairs))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    now = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
    assert now == saved


# --- validation ------------------------------------------------------------------------

X_OK = np.ones((4, 5), dtype=np.float32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"X": np.ones(5)}, "X must be a 2-D array"),
        ({"X": np.ones((2, 3, 4))}, "X must be a 2-D array"),
        ({"X": np.ones((0, 5))}, "X has no rows"),
        ({"X": np.ones((3, 0))}, "X has rows of length 0"),
        ({"X": np.ones((3, 2), dtype=complex)}, "Pass a float32 or float64 array"),
        ({"X": X_OK, "Y": np.ones((3, 6))}, "X and Y must have rows of the same length"),
        ({"X": X_OK, "block_size": 0}, "'block_size' parameter must be a positive int"),
        ({"X": X_OK, "block_size": -3}, "'block_size' parameter must be a positive int"),
        ({"X": X_OK, "block_size": 2.5}, "'block_size' parameter must be an int"),
        ({"X": X_OK, "block_size": True}, "'block_size' parameter must be an int"),
        ({"X": X_OK, "precision": "half"}, "'precision' parameter must be 'mixed' or 'float64'"),
        ({"X": X_OK, "device": "nonsense"}, "'device' parameter must name a torch device"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    X = kwargs.pop("X")
    with pytest.raises(ValueError, match=match):
        pairwise_distances(X, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(bad: float) -> None:
    X = np.random.default_rng(12).random((6, 5)).astype(np.float32)
    X[3, 2] = bad
    with pytest.raises(ValueError, match=r"Row 3 of X contains NaN or inf; texture vectors must"):
        pairwise_distances(X, block_size=2)
    with pytest.raises(ValueError, match=r"Row 3 of Y contains NaN or inf"):
        pairwise_distances(np.ones((2, 5)), X)
    center = np.zeros(5)
    with pytest.raises(ValueError, match=r"Row 1 of Xb contains NaN or inf"):
        block_sq_distances(X[2:5], center=center)
    with pytest.raises(ValueError, match=r"Row 0 of Yb contains NaN or inf"):
        block_sq_distances(X[:2], X[3:], center=center)


def test_values_too_large_for_float32() -> None:
    X = np.array([[1e39, 0.0], [-1e39, 0.0]])
    with pytest.raises(ValueError, match="X holds values too large"):
        pairwise_distances(X)
    assert pairwise_distances(X, precision="float64")[0, 1] == 2e39


def test_kernel_validation() -> None:
    with pytest.raises(ValueError, match=r"center must be a vector of length d = 5"):
        block_sq_distances(X_OK, center=np.zeros(4))
    with pytest.raises(ValueError, match="center contains NaN or inf"):
        block_sq_distances(X_OK, center=np.full(5, np.nan))
    with pytest.raises(ValueError, match="Xb and Yb must have rows of the same length"):
        block_sq_distances(X_OK, np.ones((2, 4)), center=np.zeros(5))
    with pytest.raises(ValueError, match="The vector length d must be a positive int"):
        cancellation_limits(0)
    with pytest.raises(ValueError, match=r"x_sq_norms must have one entry per row, shape \(4,\)"):
        block_sq_distances(X_OK, center=np.zeros(5), x_sq_norms=np.ones(3))
    with pytest.raises(ValueError, match="y_sq_norms must be finite and non-negative"):
        block_sq_distances(X_OK, X_OK, center=np.zeros(5), y_sq_norms=-np.ones(4))


def test_kernel_with_given_norms_still_names_non_finite_rows() -> None:
    X = np.random.default_rng(18).random((4, 5)).astype(np.float32)
    center = X.mean(axis=0, dtype=np.float64)
    norms = row_sq_norms(X, center=center)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="Row 2 of Xb contains NaN or inf"):
        block_sq_distances(X, center=center, x_sq_norms=norms)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        pairwise_distances(X_OK, device="cuda")


# --- GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    X = spread_with_duplicates(40, 50_000, seed=13)
    Y = near_duplicate_cluster(7, 50_000, 1e-4, seed=14)
    cpu = pairwise_distances(X, block_size=16, device="cpu")
    gpu = pairwise_distances(X, block_size=16, device="cuda")
    assert np.array_equal(gpu, gpu.T)
    np.testing.assert_array_equal(np.diag(gpu), 0.0)
    np.testing.assert_allclose(gpu, cpu, rtol=2 * RTOL)
    assert_close(gpu, exact_distances(X))
    assert_close(pairwise_distances(Y, device="cuda"), exact_distances(Y))


def test_kept_scratch_gives_the_same_distances_and_stays_in_the_pool():
    from microscale import scratch

    rng = np.random.default_rng(5)
    X = rng.random((40, 20_000)).astype(np.float32)
    c = X.mean(axis=0, dtype=np.float64)
    scratch.release()
    try:
        fresh = block_sq_distances(X[:25], X[25:], center=c, device="cpu")
        assert scratch.held_bytes() == 0
        kept = block_sq_distances(X[:25], X[25:], center=c, device="cpu", keep_scratch=True)
        held = scratch.held_bytes()
        assert held >= (25 + 15) * 16384 * 4  # the centred panels of both blocks
        again = block_sq_distances(X[:25], X[25:], center=c, device="cpu", keep_scratch=True)
        assert scratch.held_bytes() == held  # reused, not grown
        sym = block_sq_distances(X[:25], None, center=c, device="cpu", keep_scratch=True)
        np.testing.assert_array_equal(kept, fresh)
        np.testing.assert_array_equal(again, fresh)
        np.testing.assert_array_equal(sym, block_sq_distances(X[:25], None, center=c, device="cpu"))
    finally:
        scratch.release()
