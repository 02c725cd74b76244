"""Tests for microscale.evaluate: equivalences and independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.spatial.distance import pdist, squareform
from sklearn.linear_model import LinearRegression

from microscale.evaluate import (
    AngleFit,
    angle_rmse,
    grid_metrics,
    r_squared,
    regression_angle,
    regression_vector,
    stress_curve,
)

N = 60
THETA = np.arange(N) * np.pi / N  # the paper's angle task: theta_i = i pi / N


def circle(theta: np.ndarray) -> np.ndarray:
    """The ideal 2:1 embedding of orientations (mod pi) on a circle."""
    return np.column_stack([np.cos(2 * theta), np.sin(2 * theta)])


def rotation(alpha: float) -> np.ndarray:
    return np.array([[np.cos(alpha), -np.sin(alpha)], [np.sin(alpha), np.cos(alpha)]])


def wrap(x: np.ndarray) -> np.ndarray:
    """Independent wrap to (-pi/2, pi/2]: the representative of x mod pi nearest 0."""
    y = np.mod(x + np.pi / 2, np.pi) - np.pi / 2  # [-pi/2, pi/2)
    return np.where(np.isclose(y, -np.pi / 2, rtol=0, atol=1e-15), np.pi / 2, y)


def rmse_at(X: np.ndarray, theta: np.ndarray, c: ArrayLike, sign: float) -> np.ndarray:
    """Eq. 10 at fixed offsets c (any shape) and a mirror sign, written independently."""
    d = X - X.mean(axis=0)
    phi = np.arctan2(d[:, 1], d[:, 0])
    c = np.asarray(c, dtype=float)[..., np.newaxis]
    return np.sqrt(np.mean(wrap(theta - (sign * phi + c) / 2) ** 2, axis=-1))


def brute_force(X: np.ndarray, theta: np.ndarray, n_grid: int = 7200) -> float:
    """Dense grid over c for both mirror images, refined by a bounded scalar search."""
    best = np.inf
    grid = np.linspace(0, 2 * np.pi, n_grid, endpoint=False)
    step = grid[1]
    for sign in (1.0, -1.0):
        values = rmse_at(X, theta, grid, sign)
        c0 = grid[int(np.argmin(values))]
        res = minimize_scalar(
            lambda c, s=sign: float(rmse_at(X, theta, c, s)),
            bounds=(c0 - step, c0 + step),
            method="bounded",
            options={"xatol": 1e-12},
        )
        best = min(best, float(values.min()), float(res.fun))
    return best


def circular_distance(a: float, b: float, period: float) -> float:
    d = np.mod(a - b, period)
    return float(min(d, period - d))


# ------------------------------------------------------------------------------ angle_rmse


def test_perfect_circle_has_zero_error() -> None:
    fit = angle_rmse(circle(THETA), THETA, return_details=True)
    assert isinstance(fit, AngleFit)
    assert fit.rmse == pytest.approx(0.0, abs=1e-12)
    assert fit.mirrored is False
    assert circular_distance(fit.c, 0.0, 2 * np.pi) < 1e-12
    np.testing.assert_allclose(fit.residuals, 0.0, atol=1e-12)
    assert angle_rmse(circle(THETA), THETA) == fit.rmse


@pytest.mark.parametrize("alpha", [0.3, 2.0, -1.1, np.pi])
@pytest.mark.parametrize("reflect", [False, True])
def test_invariant_to_rotation_reflection_translation_scaling(alpha: float, reflect: bool) -> None:
    X = circle(THETA)
    if reflect:
        X = X * np.array([1.0, -1.0])
    X = 7.5 * X @ rotation(alpha).T + np.array([3.0, -40.0])
    fit = angle_rmse(X, THETA, return_details=True)
    assert fit.rmse == pytest.approx(0.0, abs=1e-11)
    assert fit.mirrored is reflect
    # phi = +-(2 theta + alpha) when the rotation follows the reflection: c undoes alpha.
    expected_c = alpha if reflect else -alpha
    assert circular_distance(fit.c, expected_c, 2 * np.pi) < 1e-10


def test_matches_known_noise_rms() -> None:
    # Equal noise on antipodal pairs (theta and theta + pi/2) keeps the centre of mass at
    # the origin, so phi_i = 2 (theta_i + eps_i) exactly and the best c removes mean(eps).
    rng = np.random.default_rng(1)
    half = rng.normal(scale=0.08, size=N // 2)
    eps = np.concatenate([half, half])
    X = 2.0 * circle(THETA + eps) + 1.0
    expected = np.sqrt(np.mean((eps - eps.mean()) ** 2))
    fit = angle_rmse(X, THETA, return_details=True)
    assert fit.rmse == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(fit.residuals, -(eps - eps.mean()), atol=1e-10)


def test_shuffling_permutes_residuals_only() -> None:
    rng = np.random.default_rng(2)
    X = circle(THETA) + rng.normal(scale=0.2, size=(N, 2))
    perm = rng.permutation(N)
    fit = angle_rmse(X, THETA, return_details=True)
    fit_p = angle_rmse(X[perm], THETA[perm], return_details=True)
    assert fit_p.rmse == pytest.approx(fit.rmse, rel=1e-12)
    assert fit_p.mirrored == fit.mirrored
    assert circular_distance(fit_p.c, fit.c, 2 * np.pi) < 1e-9
    np.testing.assert_allclose(fit_p.residuals, fit.residuals[perm], atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("noise", [0.3, 1.0, 5.0])
def test_global_minimum_against_brute_force(seed: int, noise: float) -> None:
    # From a noisy circle to pure noise: many residuals wrap, the objective has many
    # local minima, and the result must be the global one.
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, np.pi, size=40)
    X = circle(theta) + rng.normal(scale=noise, size=(40, 2))
    fit = angle_rmse(X, theta, return_details=True)
    oracle = brute_force(X, theta)
    assert fit.rmse <= oracle + 1e-12
    assert fit.rmse == pytest.approx(oracle, abs=1e-7)
    # The reported c and mirror image reproduce the reported error and residuals.
    sign = -1.0 if fit.mirrored else 1.0
    assert rmse_at(X, theta, fit.c, sign) == pytest.approx(fit.rmse, rel=1e-12)
    assert 0.0 <= fit.c < 2 * np.pi
    assert np.all(fit.residuals > -np.pi / 2) and np.all(fit.residuals <= np.pi / 2)
    assert fit.rmse == pytest.approx(np.sqrt(np.mean(fit.residuals**2)), rel=1e-12)


def test_never_worse_than_any_fixed_offset() -> None:
    rng = np.random.default_rng(5)
    theta = rng.uniform(0, np.pi, size=25)
    X = rng.normal(size=(25, 2))
    rmse = angle_rmse(X, theta)
    grid = np.linspace(0, 2 * np.pi, 1000, endpoint=False)
    for sign in (1.0, -1.0):
        assert np.all(rmse <= rmse_at(X, theta, grid, sign) + 1e-12)


def test_orientations_are_taken_mod_pi() -> None:
    rng = np.random.default_rng(3)
    X = circle(THETA) + rng.normal(scale=0.1, size=(N, 2))
    shifted = THETA + np.pi * rng.integers(-3, 4, size=N)
    assert angle_rmse(X, shifted) == pytest.approx(angle_rmse(X, THETA), rel=1e-12)


def test_theta_near_zero_and_near_pi_are_close() -> None:
    # Orientations straddling 0 == pi, embedded where they belong on the circle: an
    # unwrapped difference would see errors of almost pi; the wrapped one sees none.
    delta = np.linspace(-0.4, 0.4, 21)
    theta = np.mod(delta, np.pi)  # values just above 0 and just below pi
    assert theta.max() > 2.5 and theta.min() < 0.5
    X = circle(delta)
    # An arc is not centred on the origin: put the centre of mass at the circle's centre.
    X = np.vstack([X, -X])
    theta = np.concatenate([theta, np.mod(theta + np.pi / 2, np.pi)])
    fit = angle_rmse(X, theta, return_details=True)
    assert fit.rmse == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(fit.residuals, 0.0, atol=1e-12)


def test_constant_offset_in_labels_is_absorbed_by_c() -> None:
    delta = 1.234
    fit = angle_rmse(circle(THETA), np.mod(THETA + delta, np.pi), return_details=True)
    assert fit.rmse == pytest.approx(0.0, abs=1e-12)
    assert circular_distance(fit.c, 2 * delta, 2 * np.pi) < 1e-10


def test_large_n_is_exact_and_fast() -> None:
    rng = np.random.default_rng(4)
    theta = rng.uniform(0, np.pi, size=20_000)
    X = rng.normal(size=(20_000, 2))
    fit = angle_rmse(X, theta, return_details=True)
    # Perturbing c either way cannot lower the error (a local check at the global fit).
    sign = -1.0 if fit.mirrored else 1.0
    offsets = fit.c + np.array([1e-3, -1e-3, 0.1, -0.1])
    assert np.all(fit.rmse <= rmse_at(X, theta, offsets, sign) + 1e-12)


# ------------------------------------------------------------------------------ regression


@pytest.fixture
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10)
    X = rng.normal(size=(80, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0 + rng.normal(scale=0.7, size=80)
    return X, y


def test_r_squared_matches_sklearn(regression_data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = regression_data
    model = LinearRegression().fit(X, y)
    assert r_squared(X, y) == pytest.approx(model.score(X, y), rel=1e-12)
    np.testing.assert_allclose(regression_vector(X, y), model.coef_, rtol=1e-10)


def test_r_squared_is_one_for_exact_linear_data() -> None:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(30, 3)) * 100 + 50
    y = X @ np.array([0.1, 2.0, -3.0]) - 7.0
    assert r_squared(X, y) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(regression_vector(X, y), [0.1, 2.0, -3.0], rtol=1e-10)


def test_r_squared_of_unrelated_target_is_small() -> None:
    rng = np.random.default_rng(12)
    X = rng.normal(size=(2000, 2))
    y = rng.normal(size=2000)
    model = LinearRegression().fit(X, y)
    assert r_squared(X, y) == pytest.approx(model.score(X, y), abs=1e-12)
    assert 0.0 <= r_squared(X, y) < 0.01


def test_regression_vector_rank_deficient_matches_min_norm() -> None:
    rng = np.random.default_rng(13)
    a = rng.normal(size=20)
    X = np.column_stack([a, a])  # duplicated column
    beta = regression_vector(X, 2 * a + 1)
    np.testing.assert_allclose(beta, [1.0, 1.0], rtol=1e-10)


def orthogonal_pair(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    b1 = rng.normal(size=d)
    b2 = rng.normal(size=d)
    b2 -= (b2 @ b1) / (b1 @ b1) * b1
    return b1, b2


def test_regression_angle_orthogonal_parallel_antiparallel() -> None:
    rng = np.random.default_rng(20)
    X = rng.normal(size=(50, 5))
    b1, b2 = orthogonal_pair(rng, 5)
    y1 = X @ b1 + 2.0
    assert regression_angle(X, y1, X @ b2 - 1.0) == pytest.approx(90.0, abs=1e-9)
    assert regression_angle(X, y1, 3 * (X @ b1) + 4.0) == pytest.approx(0.0, abs=1e-9)
    assert regression_angle(X, y1, -(X @ b1)) == pytest.approx(180.0, abs=1e-9)
    assert regression_angle(X, y1, y1) == 0.0


def test_regression_angle_matches_independent_computation(
    regression_data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y1 = regression_data
    rng = np.random.default_rng(21)
    y2 = X @ rng.normal(size=4) + rng.normal(size=80)
    b1 = LinearRegression().fit(X, y1).coef_
    b2 = LinearRegression().fit(X, y2).coef_
    cos = b1 @ b2 / (np.linalg.norm(b1) * np.linalg.norm(b2))
    angle = regression_angle(X, y1, y2)
    assert angle == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-8)
    assert regression_angle(X, y2, y1) == pytest.approx(angle, abs=1e-12)
    assert regression_angle(X, y1, -y2) == pytest.approx(180.0 - angle, abs=1e-9)


# ------------------------------------------------------------------------------ stress


def kruskal_stress(D: np.ndarray, X: np.ndarray) -> float:
    d = squareform(D, checks=False)
    dhat = pdist(X)
    return float(np.sqrt(np.sum((d - dhat) ** 2) / np.sum(d**2)))


def test_stress_curve_matches_pdist_oracle() -> None:
    pytest.importorskip("microscale.manifold")
    rng = np.random.default_rng(30)
    P = rng.normal(size=(25, 3))
    D = squareform(pdist(P))
    embeddings = {3: P, 1: P[:, :1], 2: P[:, :2] + 5.0}
    curve = stress_curve(D, embeddings)
    assert list(curve) == [1, 2, 3]
    for dim, X in embeddings.items():
        assert curve[dim] == pytest.approx(kruskal_stress(D, X), rel=1e-10)
    assert curve[3] == pytest.approx(0.0, abs=1e-12)


def test_stress_curve_validates_keys() -> None:
    pytest.importorskip("microscale.manifold")
    D = squareform(pdist(np.arange(10.0).reshape(5, 2)))
    with pytest.raises(ValueError, match="is empty"):
        stress_curve(D, {})
    with pytest.raises(ValueError, match=r"key 3 must have shape \(n_samples, 3\)"):
        stress_curve(D, {3: np.zeros((5, 2))})
    with pytest.raises(ValueError, match="has 4 rows but D has 5"):
        stress_curve(D, {2: np.zeros((4, 2))})


# ------------------------------------------------------------------------------ grid_metrics


def test_grid_metrics_equals_the_single_metrics() -> None:
    rng = np.random.default_rng(40)
    levels = np.arange(4)
    t, k, a = (g.ravel() for g in np.meshgrid(levels, levels, levels, indexing="ij"))
    theta, k, A = t * np.pi / 4, 5.0 + k, 0.5 + 0.5 * a
    X = np.column_stack([k, A, np.cos(2 * theta), np.sin(2 * theta)])
    X = X @ rng.normal(size=(4, 5)) + rng.normal(scale=0.01, size=(len(k), 5))
    params = {"k": k, "A": A, "theta": theta}
    m = grid_metrics(X, params, periodic={"theta": np.pi})
    assert set(m) == {"r2", "angle_deg", "r2_cos", "r2_sin"}
    for name, y in params.items():
        assert m["r2"][name] == r_squared(X, y)
    assert list(m["angle_deg"]) == [("k", "A"), ("k", "theta"), ("A", "theta")]
    for (p, q), angle in m["angle_deg"].items():
        assert angle == pytest.approx(regression_angle(X, params[p], params[q]), abs=1e-12)
    assert m["r2_cos"]["theta"] == pytest.approx(r_squared(X, np.cos(2 * theta)), abs=1e-12)
    assert m["r2_sin"]["theta"] == pytest.approx(r_squared(X, np.sin(2 * theta)), abs=1e-12)
    # cos/sin of 2 theta are linear in the embedding; theta itself is not.
    assert m["r2_cos"]["theta"] > 0.99 and m["r2_sin"]["theta"] > 0.99
    assert m["r2"]["theta"] < m["r2_cos"]["theta"]
    assert grid_metrics(X, {"k": k})["r2_cos"] == {}


def test_grid_metrics_validation() -> None:
    X = np.random.default_rng(41).normal(size=(10, 2))
    y = np.arange(10.0)
    with pytest.raises(ValueError, match="'params' parameter is empty"):
        grid_metrics(X, {})
    with pytest.raises(ValueError, match="periodic parameter 'theta' is not in 'params'"):
        grid_metrics(X, {"k": y}, periodic={"theta": np.pi})
    with pytest.raises(ValueError, match="period of 'k' must be a positive number"):
        grid_metrics(X, {"k": y}, periodic={"k": 0.0})
    with pytest.raises(ValueError, match="'A' parameter is constant"):
        grid_metrics(X, {"k": y, "A": np.ones(10)})
    with pytest.raises(ValueError, match="'k' parameter must have one value per row"):
        grid_metrics(X, {"k": y[:5]})


# ------------------------------------------------------------------------------ validators


def test_angle_rmse_validation() -> None:
    X, theta = circle(THETA), THETA
    with pytest.raises(ValueError, match=r"must have 2 columns for angle_rmse"):
        angle_rmse(np.zeros((N, 3)), theta)
    with pytest.raises(ValueError, match=r"2-D array of shape \(n_samples, 2\)"):
        angle_rmse(X[:, 0], theta)
    with pytest.raises(ValueError, match="at least 3 samples"):
        angle_rmse(X[:2], theta[:2])
    with pytest.raises(ValueError, match="X has 60 rows but 'theta' has 59 values"):
        angle_rmse(X, theta[:-1])
    with pytest.raises(ValueError, match=r"'theta' parameter must be a 1-D array"):
        angle_rmse(X, theta[:, None])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="'X' parameter contains 1 NaN or infinite"):
        angle_rmse(bad, theta)
    bad_theta = theta.copy()
    bad_theta[0] = np.inf
    with pytest.raises(ValueError, match="'theta' parameter contains 1 NaN or infinite"):
        angle_rmse(X, bad_theta)
    with pytest.raises(ValueError, match="must be real-valued"):
        angle_rmse(X.astype(complex), theta)
    with pytest.raises(ValueError, match="must be a numeric array"):
        angle_rmse(X, theta.astype(str))


def test_regression_validation() -> None:
    X = np.random.default_rng(50).normal(size=(10, 3))
    y = np.arange(10.0)
    with pytest.raises(ValueError, match=r"Use X.reshape\(-1, 1\)"):
        r_squared(X[:, 0], y)
    with pytest.raises(ValueError, match="at least 3 samples"):
        regression_vector(X[:2], y[:2])
    with pytest.raises(ValueError, match="X has 10 rows but 'y' has 9 values"):
        r_squared(X, y[:-1])
    with pytest.raises(ValueError, match="'y' parameter is constant"):
        r_squared(X, np.full(10, 2.5))
    with pytest.raises(ValueError, match="at least one column"):
        r_squared(np.zeros((10, 0)), y)
    with pytest.raises(ValueError, match="'y2' parameter contains 1 NaN"):
        regression_angle(X, y, np.where(y == 3, np.nan, y))
    with pytest.raises(ValueError, match="regression vector of 'y1' is zero"):
        # y1 is orthogonal to every centred column: its OLS coefficients vanish.
        Xc = np.column_stack([np.ones(4), np.ones(4)]) * np.array([[1], [-1], [1], [-1]])
        regression_angle(Xc, np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1, 1, -1]))
