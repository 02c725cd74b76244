"""Tests for microscale.synth: oracles are closed forms, spectra and a scalar Perlin noise."""

from __future__ import annotations

import dataclasses
import doctest
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from microscale import synth
from microscale.synth import SynthDataset, angle_dataset, grid_dataset, texture

# --------------------------------------------------------------------------- helpers


def _stripes(theta: float, k: float, size: int) -> np.ndarray:
    """The A = 0 field cos(2 pi k r . n_theta), written out independently of synth."""
    y, x = np.mgrid[0:size, 0:size] / size
    return np.cos(2 * np.pi * k * (x * np.cos(theta) + y * np.sin(theta)))


def _spectral_peak(image: np.ndarray) -> tuple[float, float]:
    """(f_x, f_y) in cycles per image side of the largest non-DC power-spectrum bin."""
    size = image.shape[0]
    power = np.abs(np.fft.fft2(image)) ** 2
    power[0, 0] = 0.0
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    freqs = np.fft.fftfreq(size, d=1.0 / size)
    return float(freqs[ix]), float(freqs[iy])


def _fade(t: float) -> float:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def _perlin_point(gx: np.ndarray, gy: np.ndarray, x: float, y: float) -> float:
    """Textbook periodic Perlin noise at one point: the oracle for the vectorised version."""
    lattice = gx.shape[0]
    sx, sy = x * lattice, y * lattice
    cx, cy = math.floor(sx), math.floor(sy)
    tx, ty = sx - cx, sy - cy
    value = 0.0
    for dx, dy in itertools.product((0, 1), (0, 1)):
        iy, ix = (cy + dy) % lattice, (cx + dx) % lattice
        dot = gx[iy, ix] * (tx - dx) + gy[iy, ix] * (ty - dy)
        wx = _fade(tx) if dx else 1 - _fade(tx)
        wy = _fade(ty) if dy else 1 - _fade(ty)
        value += wx * wy * dot
    return value


# --------------------------------------------------------------------------- texture


@pytest.mark.parametrize("size", [16, 33, 64])
@pytest.mark.parametrize("A", [0.0, 1.0, 5.0])
def test_texture_shape_dtype_range(size: int, A: float) -> None:
    phi = texture(0.7, 12, A, size=size, seed=5)
    assert phi.shape == (size, size)
    assert phi.dtype == np.float64
    assert np.all(np.isfinite(phi))
    assert phi.min() >= -1.0
    assert phi.max() <= 1.0


def test_texture_is_deterministic() -> None:
    a = texture(1.1, 15, 2.0, size=64, seed=7)
    b = texture(1.1, 15, 2.0, size=64, seed=7)
    np.testing.assert_array_equal(a, b)


def test_texture_seed_changes_noise_only_when_A_positive() -> None:
    assert not np.allclose(
        texture(1.1, 15, 2.0, size=64, seed=7), texture(1.1, 15, 2.0, size=64, seed=8)
    )
    np.testing.assert_array_equal(
        texture(1.1, 15, 0.0, size=64, seed=7), texture(1.1, 15, 0.0, size=64, seed=8)
    )


@pytest.mark.parametrize(("theta", "k"), [(0.0, 15), (np.pi / 2, 7), (0.3, 15), (2.9, 5.5)])
def test_texture_without_noise_is_the_stripe_formula(theta: float, k: float) -> None:
    np.testing.assert_allclose(texture(theta, k, 0.0, size=48), _stripes(theta, k, 48), atol=1e-12)


@pytest.mark.parametrize(("kx", "ky"), [(15, 0), (0, 10), (6, 8), (-6, 8), (12, 5), (-3, 4)])
def test_clean_stripes_have_one_spectral_line_at_the_wave_vector(kx: int, ky: int) -> None:
    theta = math.atan2(ky, kx) % math.pi
    k = math.hypot(kx, ky)
    power = np.abs(np.fft.fft2(texture(theta, k, 0.0, size=64))) ** 2
    # fft2 axis 0 is f_y, axis 1 is f_x; a real cosine puts half its power at +-(kx, ky)
    line = power[ky % 64, kx % 64] + power[-ky % 64, -kx % 64]
    assert line == pytest.approx(power.sum(), rel=1e-9)
    assert power[ky % 64, kx % 64] == pytest.approx(power[-ky % 64, -kx % 64], rel=1e-9)


@pytest.mark.parametrize(
    ("theta", "k"),
    [
        (0.0, 15.0),
        (np.pi / 2, 10.0),
        (math.atan2(8, 6), 10.0),
        (math.atan2(5, 12), 13.0),
        (1.0, 12.0),
        (2.5, 9.3),
        (np.pi - 0.2, 14.0),
    ],
)
@pytest.mark.parametrize("A", [0.0, 0.5])
def test_spectral_peak_recovers_orientation_and_wavelength(
    theta: float, k: float, A: float
) -> None:
    fx, fy = _spectral_peak(texture(theta, k, A, size=128, seed=3))
    # the peak is at +-k n_theta, to within one frequency bin
    distance = min(
        math.hypot(fx - s * k * math.cos(theta), fy - s * k * math.sin(theta)) for s in (1, -1)
    )
    assert distance <= 1.0
    assert abs(math.hypot(fx, fy) - k) <= 1.0
    # ... so its angle (mod pi) matches theta to within the angle one bin spans at radius k
    error = (math.atan2(fy, fx) - theta + math.pi / 2) % math.pi - math.pi / 2
    assert abs(error) <= math.atan(1.0 / k)


def test_noise_grows_with_amplitude() -> None:
    theta, k, size = 0.4, 15, 64
    clean = texture(theta, k, 0.0, size=size)
    deviation = [
        np.mean(
            [
                np.mean(np.abs(texture(theta, k, A, size=size, seed=seed) - clean))
                for seed in range(3)
            ]
        )
        for A in (0.0, 1.0, 2.0, 3.0)
    ]
    assert deviation[0] == 0.0
    assert np.all(np.diff(deviation) > 0)


@pytest.mark.parametrize("A", [1.0, 3.0])
def test_texture_is_resolution_independent(A: float) -> None:
    small = texture(0.9, 11, A, size=64, seed=2)
    large = texture(0.9, 11, A, size=128, seed=2)
    # the field lives in r = pixel / size, so the coarse grid is every other fine pixel
    np.testing.assert_allclose(small, large[::2, ::2], atol=1e-12)
    assert np.corrcoef(small.ravel(), large[::2, ::2].ravel())[0, 1] > 0.95


def test_texture_orientation_convention() -> None:
    # theta = pi / 2: wave vector along +y (rows), so every row is constant
    phi = texture(np.pi / 2, 4, 0.0, size=32)
    np.testing.assert_allclose(phi, np.repeat(phi[:, :1], 32, axis=1), atol=1e-12)
    # theta = 0: wave vector along +x (columns), so every column is constant
    phi = texture(0.0, 4, 0.0, size=32)
    np.testing.assert_allclose(phi, np.repeat(phi[:1, :], 32, axis=0), atol=1e-12)


def test_texture_accepts_numpy_scalars() -> None:
    a = texture(np.float64(0.5), np.int64(9), np.float32(1.5), size=np.int64(32), seed=np.int64(4))
    np.testing.assert_array_equal(a, texture(0.5, 9, float(np.float32(1.5)), size=32, seed=4))


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("lattice", [1, 4, 16])
def test_perlin_matches_scalar_reference(lattice: int) -> None:
    rng = np.random.default_rng(lattice)
    gx, gy = rng.normal(size=(2, lattice, lattice))
    coords = np.arange(24) / 24
    grid = synth._perlin(gx, gy, coords)
    for i, j in [(0, 0), (3, 17), (23, 23), (12, 5), (7, 20)]:
        assert grid[i, j] == pytest.approx(_perlin_point(gx, gy, coords[j], coords[i]), abs=1e-12)


def test_perlin_vanishes_on_the_lattice() -> None:
    rng = np.random.default_rng(0)
    gx, gy = rng.normal(size=(2, 8, 8))
    np.testing.assert_allclose(synth._perlin(gx, gy, np.arange(8) / 8), 0.0, atol=1e-15)


def test_displacement_is_periodic_on_the_unit_square() -> None:
    coords = np.arange(32) / 32
    inside = synth._displacement_along(4, coords, 0.6, 0.8)
    shifted = synth._displacement_along(4, coords + 1.0, 0.6, 0.8)
    np.testing.assert_allclose(shifted, inside, atol=1e-12)


def test_displacement_components_are_independent_fields() -> None:
    coords = np.arange(32) / 32
    hx = synth._displacement_along(9, coords, 1.0, 0.0)
    hy = synth._displacement_along(9, coords, 0.0, 1.0)
    assert abs(np.corrcoef(hx.ravel(), hy.ravel())[0, 1]) < 0.5
    # the projection onto any direction is the same linear combination of h_x and h_y
    theta = 2.2
    n = (math.cos(theta), math.sin(theta))
    np.testing.assert_allclose(
        synth._displacement_along(9, coords, *n), n[0] * hx + n[1] * hy, atol=1e-12
    )


# --------------------------------------------------------------------------- datasets


def test_angle_dataset_parameters_and_images() -> None:
    data = angle_dataset(6, A=1.5, k=12, size=32, seed=3)
    assert isinstance(data, SynthDataset)
    assert len(data) == 6
    assert data.images.shape == (6, 32, 32)
    assert data.images.dtype == np.float64
    np.testing.assert_allclose(data.theta, np.arange(6) * np.pi / 6)
    np.testing.assert_array_equal(data.k, np.full(6, 12.0))
    np.testing.assert_array_equal(data.A, np.full(6, 1.5))
    assert len(set(data.seed.tolist())) == 6
    assert np.all(data.seed >= 0)
    for i in range(6):
        expected = texture(data.theta[i], data.k[i], data.A[i], size=32, seed=int(data.seed[i]))
        np.testing.assert_array_equal(data.images[i], expected)


def test_angle_dataset_seeds() -> None:
    a = angle_dataset(4, A=1.0, size=16, seed=0)
    # image i's seed depends only on (seed, i) ...
    np.testing.assert_array_equal(angle_dataset(2, A=1.0, size=16, seed=0).seed, a.seed[:2])
    # ... and trials with different seeds use different noise fields
    b = angle_dataset(4, A=1.0, size=16, seed=1)
    assert not set(a.seed.tolist()) & set(b.seed.tolist())
    assert not np.allclose(a.images, b.images)


def test_dataset_params_and_frozen() -> None:
    data = angle_dataset(3, A=0.5, size=16)
    params = data.params
    assert list(params) == ["theta", "k", "A", "seed"]
    for name, values in params.items():
        np.testing.assert_array_equal(values, getattr(data, name))
        assert values.shape == (3,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.A = np.zeros(3)  # type: ignore[misc]


def test_grid_dataset_default_is_the_papers_1000_images() -> None:
    data = grid_dataset(size=16)
    assert len(data) == 1000
    assert data.images.shape == (1000, 16, 16)
    combos = set(zip(data.theta.tolist(), data.k.tolist(), data.A.tolist(), strict=True))
    assert len(combos) == 1000
    assert len(set(data.seed.tolist())) == 1000
    for name, (lo, hi) in [("theta", (0.0, np.pi)), ("k", (5.0, 15.0)), ("A", (0.5, 2.0))]:
        expected = lo + np.arange(10) * (hi - lo) / 10
        np.testing.assert_allclose(np.unique(data.params[name]), expected)
        assert data.params[name].max() < hi


def test_grid_dataset_custom_ranges_order_and_images() -> None:
    data = grid_dataset(
        3, size=16, seed=2, theta_range=(0.0, 1.5), k_range=(6, 9), A_range=(0.0, 3.0)
    )
    assert len(data) == 27
    # theta varies slowest, A fastest
    np.testing.assert_allclose(data.theta, np.repeat([0.0, 0.5, 1.0], 9))
    np.testing.assert_allclose(data.k, np.tile(np.repeat([6.0, 7.0, 8.0], 3), 3))
    np.testing.assert_allclose(data.A, np.tile([0.0, 1.0, 2.0], 9))
    for i in (0, 13, 26):
        expected = texture(data.theta[i], data.k[i], data.A[i], size=16, seed=int(data.seed[i]))
        np.testing.assert_array_equal(data.images[i], expected)


def test_progress_bar_gives_the_same_images(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = grid_dataset(2, size=16)
    loud = grid_dataset(2, size=16, progress=True)
    np.testing.assert_array_equal(quiet.images, loud.images)
    assert "grid dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 8}, r"The 'size' parameter must be an int >= 16\. Got 8 instead\."),
        ({"size": 32.0}, r"The 'size' parameter must be an int >= 16\. Got 32\.0 instead\."),
        ({"size": True}, r"The 'size' parameter must be an int >= 16"),
        ({"A": -0.5}, r"The 'A' parameter must be >= 0\. Got -0\.5 instead\."),
        ({"A": float("nan")}, r"The 'A' parameter must be finite\. Got nan instead\."),
        ({"theta": float("nan")}, r"The 'theta' parameter must be finite\. Got nan instead\."),
        ({"theta": float("inf")}, r"The 'theta' parameter must be finite\. Got inf instead\."),
        ({"theta": "0"}, r"The 'theta' parameter must be a real number\. Got '0' instead\."),
        ({"k": -1.0}, r"The 'k' parameter must be >= 0\. Got -1\.0 instead\."),
        ({"seed": -1}, r"The 'seed' parameter must be an int >= 0\. Got -1 instead\."),
    ],
)
def test_texture_validation(kwargs: dict[str, object], match: str) -> None:
    args = {"theta": 0.1, "k": 5.0, "A": 1.0, "size": 16, "seed": 0} | kwargs
    theta, k, A = args.pop("theta"), args.pop("k"), args.pop("A")
    with pytest.raises(ValueError, match=match):
        texture(theta, k, A, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: angle_dataset(0, A=1.0), r"The 'n' parameter must be an int >= 1\. Got 0"),
        (lambda: angle_dataset(2.5, A=1.0), r"The 'n' parameter must be an int >= 1\. Got 2\.5"),
        (lambda: angle_dataset(3, A=-1.0), r"The 'A' parameter must be >= 0"),
        (lambda: angle_dataset(3, A=1.0, size=4), r"The 'size' parameter must be an int >= 16"),
        (lambda: angle_dataset(3, A=1.0, seed=-2), r"The 'seed' parameter must be an int >= 0"),
        (lambda: grid_dataset(0), r"The 'n_per_axis' parameter must be an int >= 1\. Got 0"),
        (
            lambda: grid_dataset(2, k_range=(5, 5)),
            r"The 'k_range' parameter must satisfy lo < hi\. Got \(5, 5\) instead\.",
        ),
        (
            lambda: grid_dataset(2, A_range=(-1.0, 2.0)),
            r"The 'A_range' parameter must have lo >= 0\. Got \(-1\.0, 2\.0\) instead\.",
        ),
        (
            lambda: grid_dataset(2, theta_range=(0.0,)),
            r"The 'theta_range' parameter must be a pair \(lo, hi\)\. Got \(0\.0,\) instead\.",
        ),
        (
            lambda: grid_dataset(2, theta_range=(0.0, float("inf"))),
            r"The 'theta_range\[1\]' parameter must be finite\. Got inf instead\.",
        ),
    ],
)
def test_dataset_validation(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- module


def test_docstring_examples() -> None:
    result = doctest.testmod(synth, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_synth_does_not_import_torch() -> None:
    code = "import sys, microscale.synth; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- noise settings


def test_by_eye_preset_regenerates_the_images_of_earlier_releases() -> None:
    # pixel values of texture(0.7, 12, 2.0, size=32, seed=5) before the calibration
    phi = texture(0.7, 12, 2.0, size=32, seed=5, noise="by-eye")
    assert phi[3, 7] == pytest.approx(-0.49172635235892237, abs=1e-13)
    assert phi[20, 11] == pytest.approx(-0.24208374772717567, abs=1e-13)
    assert phi.sum() == pytest.approx(16.165598082951544, abs=1e-10)
    assert synth.NOISE_BY_EYE == synth.PerlinNoise(0.035, 4, 3, 2, 0.5)


def test_noise_parameter_forms_agree() -> None:
    default = texture(0.3, 15, 2.0, size=32, seed=1)
    np.testing.assert_array_equal(default, texture(0.3, 15, 2.0, size=32, seed=1, noise=None))
    np.testing.assert_array_equal(
        default, texture(0.3, 15, 2.0, size=32, seed=1, noise="calibrated")
    )
    np.testing.assert_array_equal(
        default, texture(0.3, 15, 2.0, size=32, seed=1, noise=synth.DEFAULT_NOISE)
    )
    data = angle_dataset(3, A=2.0, size=32, seed=4, noise="by-eye")
    np.testing.assert_array_equal(
        data.images[1],
        texture(data.theta[1], 15, 2.0, size=32, seed=int(data.seed[1]), noise="by-eye"),
    )
    grid = grid_dataset(2, size=16, noise="by-eye")
    assert not np.array_equal(grid.images, grid_dataset(2, size=16).images)


def test_amplitude_only_rescales_A() -> None:
    # u = r + A h with h linear in the amplitude: (A, 2 a) gives the image of (2 A, a)
    base = synth.PerlinNoise(0.05, 2, 2, 2, 0.5)
    double = dataclasses.replace(base, amplitude=0.1)
    np.testing.assert_allclose(
        texture(1.0, 15, 1.5, size=32, seed=2, noise=double),
        texture(1.0, 15, 3.0, size=32, seed=2, noise=base),
        atol=1e-12,
    )


def test_shared_components_displace_along_the_diagonal_only() -> None:
    shared = synth.PerlinNoise(0.05, 2, 2, 2, 0.5, "shared")
    coords = np.arange(32) / 32
    # h = (h, h): no displacement across the direction (1, -1) / sqrt(2)
    across = synth._displacement_along(3, coords, 2**-0.5, -(2**-0.5), shared)
    np.testing.assert_allclose(across, 0.0, atol=1e-15)
    along = synth._displacement_along(3, coords, 1.0, 0.0, shared)
    np.testing.assert_allclose(synth._displacement_along(3, coords, 0.0, 1.0, shared), along)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(amplitude=0.0), "'amplitude' parameter must be > 0"),
        (dict(amplitude=0.1, base_lattice=0), "'base_lattice' parameter must be an int >= 1"),
        (dict(amplitude=0.1, octaves=1.5), "'octaves' parameter must be an int >= 1"),
        (dict(amplitude=0.1, lacunarity=1), "'lacunarity' parameter must be an int >= 2"),
        (dict(amplitude=0.1, persistence=0), "'persistence' parameter must be > 0"),
        (dict(amplitude=0.1, components="both"), "'components' parameter must be"),
    ],
)
def test_perlin_noise_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synth.PerlinNoise(**kwargs)


def test_unknown_noise_preset_names_the_presets() -> None:
    with pytest.raises(ValueError, match=r"one of \['by-eye', 'calibrated'\]"):
        texture(0.3, 15, 2.0, size=32, noise="perlin")


# --------------------------------------------------------------------------- calibrated noise


def _peak_power(A: float, noise: str, *, size: int = 64, n: int = 12) -> float:
    """Mean over an angle dataset of the largest non-DC power-spectrum bin (Fig. 4)."""
    from microscale.spectrum import power_spectra

    S = power_spectra(angle_dataset(n, A=A, size=size, noise=noise).images)
    S[:, 0] = 0.0
    return float(S.max(axis=1).mean())


def test_calibrated_peak_power_falls_steeply_with_A() -> None:
    """Fig. 4: the PS peaks broaden and their power falls fast with A. The calibration
    measured P(1)/P(3) ~ 45-50 (~15 for the by-eye setting, the control)."""
    calibrated = [_peak_power(A, "calibrated") for A in (0, 1, 2, 3, 4)]
    assert np.all(np.diff(calibrated) < 0)
    assert calibrated[1] / calibrated[3] > 25
    by_eye = [_peak_power(A, "by-eye") for A in (1, 3)]
    assert by_eye[0] / by_eye[1] < 25


def test_calibrated_strain_puts_the_ps_window_where_the_calibration_did() -> None:
    """The calibration put the PS window (strain 1.05-1.65 RMS, stage 1) on A = 2-3.5:
    the default's strain per unit A is 0.50 (by-eye: 0.21)."""
    per_A = synth.displacement_strain(synth.DEFAULT_NOISE)
    assert per_A == pytest.approx(0.50, rel=0.06)
    assert 2.0 * per_A == pytest.approx(1.05, rel=0.1)
    assert 3.5 * per_A == pytest.approx(1.65, rel=0.1)
    assert synth.displacement_strain(synth.NOISE_BY_EYE) == pytest.approx(0.21, rel=0.1)
    # the strain is linear in the amplitude (u = r + A h)
    double = dataclasses.replace(synth.DEFAULT_NOISE, amplitude=2 * synth.PERLIN_AMPLITUDE)
    assert synth.displacement_strain(double) == pytest.approx(2 * per_A, rel=1e-12)


def test_default_noise_is_the_calibrated_preset() -> None:
    assert synth.NOISE_PRESETS["calibrated"] is synth.DEFAULT_NOISE
    assert synth.DEFAULT_NOISE == synth.PerlinNoise(0.028, 8, 3, 2, 0.7)
    assert synth.DEFAULT_NOISE != synth.NOISE_BY_EYE


def test_displacement_strain_validation_and_presets() -> None:
    with pytest.raises(ValueError, match="'seeds' parameter must be an int >= 1"):
        synth.displacement_strain(seeds=0)
    with pytest.raises(ValueError, match="'size' parameter must be an int >= 16"):
        synth.displacement_strain(size=8)
    assert synth.displacement_strain("by-eye", size=64, seeds=2) == synth.displacement_strain(
        synth.NOISE_BY_EYE, size=64, seeds=2
    )
