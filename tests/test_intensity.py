from pathlib import Path

import numpy as np
import pytest

from microscale.intensity import ConstantImageError, as_image_stack, normalize_intensity


def test_minmax_maps_synthetic_range_exactly():
    phi = np.cos(np.linspace(0, 6 * np.pi, 64 * 64)).reshape(64, 64)
    phi[0, 0], phi[0, 1] = -1.0, 1.0
    out = normalize_intensity(phi, dtype=np.float64)
    np.testing.assert_allclose(out[0], (phi + 1) / 2, atol=1e-15)


def test_minmax_per_image():
    stack = np.stack([np.arange(16.0).reshape(4, 4), 10 * np.arange(16.0).reshape(4, 4) + 5])
    out = normalize_intensity(stack)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1], atol=1e-7)
    assert out.min() == 0 and out.max() == 1


def test_percentile_ignores_hot_pixels():
    rng = np.random.default_rng(0)
    img = rng.random((100, 100))
    hot = img.copy()
    hot[3, 4] = 1e6
    robust = normalize_intensity(hot, method="percentile")[0]
    plain = normalize_intensity(hot, method="minmax")[0]
    assert plain[10:, 10:].max() < 1e-5  # the hot pixel crushed everything else
    ref = normalize_intensity(img, method="percentile")[0]
    mask = np.ones_like(img, bool)
    mask[3, 4] = False
    np.testing.assert_allclose(robust[mask], ref[mask], atol=0.02)
    assert robust.min() >= 0 and robust.max() <= 1


@pytest.mark.parametrize(
    ("data", "kwargs", "expected"),
    [
        (np.array([[0, 255], [51, 102]], np.uint8), {}, [[0, 1], [0.2, 0.4]]),
        (np.array([[0, 4095], [0, 0]], np.uint16), {"bit_depth": 12}, [[0, 1], [0, 0]]),
        (np.array([[-32768, 32767], [0, 0]], np.int16), {}, [[0, 1], [32768 / 65535] * 2]),
        (np.array([[True, False], [False, False]]), {}, [[1, 0], [0, 0]]),
        (np.array([[0.25, 0.5], [0.5, 0.5]], np.float32), {}, [[0.25, 0.5], [0.5, 0.5]]),
    ],
)
def test_dtype_range(data, kwargs, expected):
    out = normalize_intensity(data, method="dtype", dtype=np.float64, **kwargs)[0]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_dtype_rejects_values_beyond_bit_depth():
    with pytest.raises(ValueError, match="exceed the 12-bit range"):
        normalize_intensity(np.array([[0, 5000]], np.uint16), method="dtype", bit_depth=12)
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        normalize_intensity(np.array([[0.0, 2.0]]), method="dtype")


def test_constant_image_rejected():
    stack = np.zeros((3, 8, 8))
    stack[0, 0, 0] = stack[2, 1, 1] = 1
    with pytest.raises(ConstantImageError, match="Image 1 is constant"):
        normalize_intensity(stack)
    assert issubclass(ConstantImageError, ValueError)


def test_no_contrast_between_percentiles():
    img = np.zeros((100, 100))
    img[0, 0] = 1
    with pytest.raises(ConstantImageError, match="no contrast between"):
        normalize_intensity(img, method="percentile")


def test_nan_rejected_with_index():
    stack = np.ones((2, 4, 4))
    stack[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="Image 1 contains 1 NaN or infinite"):
        normalize_intensity(stack)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4, 5), (0, 4, 4)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="Expected an|length 0"):
        as_image_stack(np.zeros(shape))


def test_sequence_of_different_shapes():
    with pytest.raises(ValueError, match="image 1 is \\(5, 5\\)"):
        as_image_stack([np.zeros((4, 4)), np.zeros((5, 5))])


def test_bad_options():
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        normalize_intensity(np.eye(3), method="zscore")
    with pytest.raises(ValueError, match="'percentiles' parameter"):
        normalize_intensity(np.eye(3), method="percentile", percentiles=(50, 10))


@pytest.mark.parametrize("paths", [["a.tif"], "a.tif", [Path("a.tif")], np.array(["a.tif"])])
def test_paths_are_refused_with_how_to_read_them(paths):
    from microscale.errors import DtypeError

    with pytest.raises(DtypeError, match=r"file path \('a.tif'\).*microscale.read_micrograph"):
        as_image_stack(paths)
