import numpy as np
import pytest

from microscale import power_spectra


def test_sinusoid_peak_at_its_frequency():
    n = 64
    y, x = np.mgrid[0:n, 0:n] / n
    img = np.cos(2 * np.pi * (5 * x + 3 * y))
    S = power_spectra(img).reshape(n, n)
    peaks = {tuple(map(int, p)) for p in np.argwhere(S > 0.5 * S.max())}
    assert peaks == {(3, 5), (n - 3, n - 5)}
    # Parseval: sum S = N * sum phi^2 for phi in [-1, 1]
    phi = 2 * (img - img.min()) / (img.max() - img.min()) - 1
    np.testing.assert_allclose(S.sum(), n * n * (phi**2).sum(), rtol=1e-12)


def test_matches_direct_fft_and_is_invariant_to_affine_intensity():
    rng = np.random.default_rng(1)
    imgs = rng.random((3, 20, 24))
    S = power_spectra(imgs)
    assert S.shape == (3, 480)
    phi = imgs[1] - imgs[1].min()
    phi = 2 * phi / phi.max() - 1
    np.testing.assert_allclose(S[1], np.abs(np.fft.fft2(phi)).ravel() ** 2, rtol=1e-10)
    np.testing.assert_allclose(power_spectra(7 * imgs + 3), S, rtol=1e-9)


def test_translation_invariance():
    rng = np.random.default_rng(2)
    img = rng.random((32, 32))
    S = power_spectra(np.stack([img, np.roll(img, (5, 7), axis=(0, 1))]))
    np.testing.assert_allclose(S[0], S[1], rtol=1e-9, atol=1e-9)


def test_batches_agree():
    rng = np.random.default_rng(3)
    imgs = rng.random((7, 16, 16))
    np.testing.assert_array_equal(power_spectra(imgs, batch_size=3), power_spectra(imgs))


def test_different_shapes_rejected():
    with pytest.raises(ValueError, match="same shape"):
        power_spectra([np.eye(8), np.eye(9)])


def test_constant_and_nan_rejected():
    with pytest.raises(ValueError, match="is constant"):
        power_spectra(np.ones((8, 8)))
    img = np.eye(8)
    img[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        power_spectra(img)
