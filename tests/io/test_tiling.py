"""Crop, resample and tile (io/tiling.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microscale.io import (
    ImageTooSmallError,
    crop,
    resample,
    tile,
)
from tests.io.helpers import random_array


def _coverage(shape: tuple[int, int], origins: np.ndarray, s: int) -> np.ndarray:
    count = np.zeros(shape, dtype=int)
    for r, c in origins:
        count[r : r + s, c : c + s] += 1
    return count


# --------------------------------------------------------------------------- crop


def test_crop_removes_margins_as_a_view() -> None:
    image = np.arange(7 * 9).reshape(7, 9)
    out = crop(image, bottom=2, top=1, left=3, right=1)
    np.testing.assert_array_equal(out, image[1:5, 3:8])
    assert np.shares_memory(out, image)
    np.testing.assert_array_equal(crop(image), image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bottom": -1}, r"'bottom' parameter must be an int >= 0. Got -1"),
        ({"top": 1.5}, r"'top' parameter must be an int >= 0. Got 1.5"),
        ({"left": True}, r"'left' parameter must be an int >= 0. Got True"),
        ({"right": None}, r"'right' parameter must be an int >= 0. Got None"),
        ({"top": 3, "bottom": 4}, r"top=3, bottom=4.*7x9 image leaves no pixels"),
        ({"left": 9}, r"left=9.*leaves no pixels"),
    ],
)
def test_crop_validates(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        crop(np.zeros((7, 9)), **kwargs)


def test_crop_rejects_colour() -> None:
    with pytest.raises(ValueError, match=r"2-D \(H, W\) grey array.*\(4, 4, 3\)"):
        crop(np.zeros((4, 4, 3)), top=1)


# --------------------------------------------------------------------------- resample


def test_resample_shapes_and_dtype() -> None:
    image = random_array((40, 60), np.uint8)
    down = resample(image, pixel_size_nm=1.0, target_nm=2.0)
    assert down.shape == (20, 30) and down.dtype == np.float64
    up = resample(image, pixel_size_nm=3.0, target_nm=1.0)
    assert up.shape == (120, 180)
    same = resample(image, pixel_size_nm=2.5, target_nm=2.5)
    np.testing.assert_array_equal(same, image.astype(np.float64))
    assert resample(np.ones((10, 10), bool), pixel_size_nm=1.0, target_nm=3.0).shape == (3, 3)


def test_resample_keeps_smooth_content_and_constants() -> None:
    # a slow cosine sampled at pixel centres; after downsampling by 2, the new pixel centres
    # sit at 2 i + 0.5 in old pixel units: the values must follow the cosine there
    n = 128
    x = np.arange(n) + 0.5
    image = np.tile(np.cos(2 * np.pi * x / 64.0), (8, 1))
    down = resample(image, pixel_size_nm=1.0, target_nm=2.0)
    x_new = (np.arange(n // 2) + 0.5) * 2.0
    expected = np.cos(2 * np.pi * x_new / 64.0) * np.exp(-2 * np.pi**2 * 0.25 / 64.0**2)
    np.testing.assert_allclose(down[2, 4:-4], expected[4:-4], atol=0.01)
    flat = resample(np.full((30, 30), 7.0), pixel_size_nm=1.0, target_nm=3.7)
    np.testing.assert_allclose(flat, 7.0)


def test_resample_anti_aliasing_removes_the_nyquist_pattern() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float64)
    down = resample(checker, pixel_size_nm=1.0, target_nm=4.0)
    assert down.shape == (16, 16)
    np.testing.assert_allclose(down, 0.5, atol=1e-3)  # no aliased stripes


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.ones((4, 4)), {"pixel_size_nm": 0.0, "target_nm": 1.0}, r"'pixel_size_nm'.*> 0"),
        (np.ones((4, 4)), {"pixel_size_nm": 1.0, "target_nm": -2.0}, r"'target_nm'.*> 0"),
        (np.ones((4, 4)), {"pixel_size_nm": np.nan, "target_nm": 1.0}, r"'pixel_size_nm'"),
        (np.ones((4, 4)), {"pixel_size_nm": "1", "target_nm": 1.0}, r"must be a real number"),
        (np.ones((4, 4, 3)), {"pixel_size_nm": 1.0, "target_nm": 1.0}, r"2-D \(H, W\)"),
        (np.ones((4, 4)), {"pixel_size_nm": 1.0, "target_nm": 10.0}, r"gives a 0x0 image"),
        (np.full((4, 4), np.nan), {"pixel_size_nm": 1.0, "target_nm": 2.0}, r"NaN"),
    ],
)
def test_resample_validates(image: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resample(image, **kwargs)


def test_tile_exact_multiple_has_no_overlap() -> None:
    image = np.arange(8 * 12).reshape(8, 12)
    tiles, origins = tile(image, tile_size=4)
    assert tiles.shape == (6, 4, 4) and tiles.dtype == image.dtype
    assert origins.dtype == np.int64
    assert origins.tolist() == [[r, c] for r in (0, 4) for c in (0, 4, 8)]
    for t, (r, c) in zip(tiles, origins, strict=True):
        np.testing.assert_array_equal(t, image[r : r + 4, c : c + 4])
    assert (_coverage(image.shape, origins, 4) == 1).all()


def test_tile_last_tile_is_flush_with_the_edge() -> None:
    image = random_array((10, 13), np.uint16)
    tiles, origins = tile(image, tile_size=4)
    assert sorted({int(r) for r in origins[:, 0]}) == [0, 4, 6]
    assert sorted({int(c) for c in origins[:, 1]}) == [0, 4, 8, 9]
    for t, (r, c) in zip(tiles, origins, strict=True):
        np.testing.assert_array_equal(t, image[r : r + 4, c : c + 4])
    assert (_coverage(image.shape, origins, 4) >= 1).all()
    assert (origins + 4 <= np.array(image.shape)).all()


def test_tile_stride_overlap() -> None:
    image = random_array((9, 9), np.float32)
    tiles, origins = tile(image, tile_size=4, stride=2)
    assert sorted({int(r) for r in origins[:, 0]}) == [0, 2, 4, 5]
    assert len(tiles) == 16
    assert (_coverage(image.shape, origins, 4) >= 1).all()


def test_tile_pads_a_short_side_by_reflection() -> None:
    image = random_array((5, 11), np.uint8)  # 5 >= 0.5 * 8: padded to 8 rows
    tiles, origins = tile(image, tile_size=8)
    assert origins.tolist() == [[0, 0], [0, 3]]
    padded = np.pad(image, ((0, 3), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(tiles[0], padded[:, :8])
    np.testing.assert_array_equal(tiles[1], padded[:, 3:11])
    np.testing.assert_array_equal(tiles[:, :5], np.stack([image[:, :8], image[:, 3:]]))
    valid = np.minimum(origins + 8, image.shape) - origins  # the documented record
    assert valid.tolist() == [[5, 8], [5, 8]]


def test_tile_pads_both_sides_of_a_small_image() -> None:
    image = random_array((4, 6), np.int16)
    tiles, origins = tile(image, tile_size=8, min_fraction=0.5)
    assert origins.tolist() == [[0, 0]]
    np.testing.assert_array_equal(tiles[0], np.pad(image, ((0, 4), (0, 2)), mode="reflect"))


def test_tile_one_pixel_side_pads_by_repetition() -> None:
    tiles, _ = tile(np.array([[1, 2, 3, 4]]), tile_size=4, min_fraction=0.25)
    np.testing.assert_array_equal(tiles[0], np.tile([1, 2, 3, 4], (4, 1)))


def test_tile_too_small_raises() -> None:
    with pytest.raises(
        ImageTooSmallError, match=r"'x\.png': the image is 3x40 pixels.*0\.5 \* 8 = 4"
    ):
        tile(np.zeros((3, 40)), tile_size=8, source="x.png")
    with pytest.raises(ImageTooSmallError, match=r"The image is 40x2 pixels"):
        tile(np.zeros((40, 2)), tile_size=8, min_fraction=0.3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_size": 0}, r"'tile_size' parameter must be an int >= 1. Got 0"),
        ({"tile_size": 4.0}, r"'tile_size' parameter must be an int >= 1. Got 4.0"),
        ({"tile_size": 4, "stride": 0}, r"'stride' parameter must be an int >= 1. Got 0"),
        ({"tile_size": 4, "stride": 5}, r"'stride' parameter must be <= tile_size=4.*Got 5"),
        ({"min_fraction": 0}, r"'min_fraction' parameter must be a number in \(0, 1\]"),
        ({"min_fraction": 1.5}, r"'min_fraction'.*Got 1.5"),
        ({"min_fraction": True}, r"'min_fraction'.*Got True"),
    ],
)
def test_tile_validates(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tile(np.zeros((16, 16)), **kwargs)


def test_tile_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match=r"2-D \(H, W\) grey array.*\(2, 16, 16\)"):
        tile(np.zeros((2, 16, 16)), tile_size=4)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    s=st.integers(1, 12),
    stride_frac=st.floats(0.05, 1.0),
    min_fraction=st.sampled_from([0.25, 0.5, 1.0]),
)
def test_tile_covers_every_pixel(
    h: int, w: int, s: int, stride_frac: float, min_fraction: float
) -> None:
    stride = max(1, round(s * stride_frac))
    image = np.arange(h * w).reshape(h, w)
    if min(h, w) < min_fraction * s:
        with pytest.raises(ImageTooSmallError):
            tile(image, tile_size=s, stride=stride, min_fraction=min_fraction)
        return
    tiles, origins = tile(image, tile_size=s, stride=stride, min_fraction=min_fraction)
    assert tiles.shape == (len(origins), s, s)
    assert (origins >= 0).all()
    padded_shape = (max(h, s), max(w, s))
    assert (origins + s <= np.array(padded_shape)).all()
    assert (_coverage(padded_shape, origins, s) >= 1).all()
    for t, (r, c) in zip(tiles, origins, strict=True):
        real = t[: max(0, min(s, h - r)), : max(0, min(s, w - c))]
        np.testing.assert_array_equal(real, image[r : r + s, c : c + s])
