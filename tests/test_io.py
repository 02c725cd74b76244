"""Tests for microscale.io: discovery, sniffing, decoding, pixel sizes, geometry.

Every file is written here, small, with the library that owns the format (tifffile,
Pillow) or by hand where a header must lie (a PNG claiming 20000 x 20000 pixels) or no
writer exists (Gatan DM3). Oracles: the array written, Pillow's own decoding, the BT.601
formula by hand, ``np.pad``, ``hashlib``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from microscale.io import (
    DecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    Micrograph,
    UnsupportedFormatError,
    count_pages,
    crop,
    detect_info_bar,
    discover,
    file_digest,
    read_micrograph,
    resample,
    sniff_format,
    tile,
)
from microscale.io import metadata as meta
from microscale.testing.hostile import lying_png

RNG = np.random.default_rng(1234)


def _random(shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return RNG.standard_normal(shape).astype(dtype)


def _bt601(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(rgb.dtype)


def _save_pil(arr: np.ndarray, path: Path, fmt: str, **kw: object) -> Path:
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def _pil_decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# --------------------------------------------------------------------------- sniffing

_SIGNATURES = [
    (b"II*\x00\x08\x00\x00\x00" + b"\x00" * 12, "tiff"),
    (b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 12, "tiff"),
    (b"II+\x00\x08\x00\x00\x00" + b"\x00" * 12, "tiff"),
    (b"MM\x00+\x00\x08\x00\x00" + b"\x00" * 12, "tiff"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 12, "png"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 16, "jpeg"),
    (b"BM" + b"\x00" * 12 + struct.pack("<I", 40) + b"\x00" * 4, "bmp"),
    (struct.pack(">III", 3, 1000, 1) + b"\x00" * 8, "dm"),
    (struct.pack(">IQI", 4, 1000, 0) + b"\x00" * 4, "dm"),
    (b"", None),
    (b"hello, this is text\n", None),
    (b"BMW 320i service notes\n", None),  # 'BM' without a DIB header
    (b"\x00\x00\x00\x01Bud1" + b"\x00" * 24, None),  # .DS_Store
    (struct.pack(">III", 3, 1000, 7) + b"\x00" * 8, None),  # DM-like, bad byte order
    (b"PK\x03\x04" + b"\x00" * 20, None),
    (b"GIF89a" + b"\x00" * 20, None),
]


@pytest.mark.parametrize(("head", "expected"), _SIGNATURES)
def test_sniff_format_by_magic_bytes(tmp_path: Path, head: bytes, expected: str | None) -> None:
    path = tmp_path / "file.tif"  # the extension must not matter
    path.write_bytes(head)
    assert sniff_format(path) == expected


def test_sniff_ignores_extension_and_read_follows_the_bytes(tmp_path: Path) -> None:
    arr = _random((9, 11), np.uint8)
    png_named_tif = _save_pil(arr, tmp_path / "really_a_png.tif", "PNG")
    assert sniff_format(png_named_tif) == "png"
    m = read_micrograph(png_named_tif)
    assert m.metadata["format"] == "png"
    np.testing.assert_array_equal(m.data, arr)


def test_text_named_tif_empty_file_and_readme_are_not_images(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("acquired at 200 kV\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    readme = tmp_path / "README.txt"
    readme.write_text("# archive\n")
    ds = tmp_path / ".DS_Store"
    ds.write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 24)
    for path in (text, empty, readme, ds):
        assert sniff_format(path) is None
    with pytest.raises(UnsupportedFormatError, match=r"notes\.tif.*not an image.*TIFF"):
        read_micrograph(text)
    with pytest.raises(UnsupportedFormatError, match=r"empty\.png.*empty \(0 bytes\)"):
        read_micrograph(empty)
    with pytest.raises(UnsupportedFormatError, match=r"README\.txt"):
        count_pages(readme)
    with pytest.raises(UnsupportedFormatError, match=r"\.DS_Store"):
        read_micrograph(ds)


def test_error_classes_refine_builtins() -> None:
    assert issubclass(UnsupportedFormatError, ValueError)
    assert issubclass(DecodeError, OSError)
    assert issubclass(ImageTooLargeError, ValueError)
    assert issubclass(ImageTooSmallError, ValueError)


# --------------------------------------------------------------------------- TIFF round trips


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_]
)
@pytest.mark.parametrize("bigtiff", [False, True])
def test_tiff_round_trip_keeps_native_dtype(tmp_path: Path, dtype: type, bigtiff: bool) -> None:
    arr = _random((13, 17), dtype)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", bigtiff=bigtiff)
    m = read_micrograph(path)
    assert m.data.dtype == arr.dtype
    np.testing.assert_array_equal(m.data, arr)
    assert m.metadata["format"] == "tiff"
    assert m.metadata["channel_policy"] == "grey"
    assert m.pixel_size_nm is None
    assert m.source == os.fspath(path)
    assert m.page == 0


def test_big_endian_tiff_comes_back_native(tmp_path: Path) -> None:
    arr = _random((8, 9), np.uint16)
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, arr, byteorder=">", photometric="minisblack")
    assert path.read_bytes()[:2] == b"MM"
    m = read_micrograph(path)
    assert m.data.dtype.isnative
    np.testing.assert_array_equal(m.data, arr)


def test_12_bit_data_in_uint16(tmp_path: Path) -> None:
    arr = RNG.integers(0, 4096, (10, 12)).astype(np.uint16)
    plain = tmp_path / "in16.tif"
    tifffile.imwrite(plain, arr, photometric="minisblack")
    m = read_micrograph(plain)
    assert m.data.dtype == np.uint16 and m.metadata["bit_depth"] == 16
    np.testing.assert_array_equal(m.data, arr)


def test_packed_12_bit_tiff(tmp_path: Path) -> None:
    pytest.importorskip("imagecodecs")  # tifffile packs and unpacks 12-bit with it
    arr = RNG.integers(0, 4096, (10, 13)).astype(np.uint16)
    path = tmp_path / "packed12.tif"
    tifffile.imwrite(path, arr, bitspersample=12, photometric="minisblack")
    m = read_micrograph(path)
    assert m.data.dtype == np.uint16 and m.metadata["bit_depth"] == 12
    np.testing.assert_array_equal(m.data, arr)


def test_minis_white_is_inverted_like_pillow(tmp_path: Path) -> None:
    arr = _random((10, 12), np.uint8)
    path = tmp_path / "white.tif"
    tifffile.imwrite(path, arr, photometric="miniswhite")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, 255 - arr)
    np.testing.assert_array_equal(m.data, _pil_decode(path))  # Pillow: mode L;I
    assert "MINISWHITE" in m.metadata["channel_policy"]


def test_bilevel_tiff_from_tifffile_default(tmp_path: Path) -> None:
    # tifffile writes bool as MINISWHITE by default; 1 then means black.
    arr = _random((9, 10), np.bool_)
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, arr)
    m = read_micrograph(path)
    assert m.data.dtype == np.bool_
    np.testing.assert_array_equal(m.data, ~arr)


def test_tiff_rgb_and_rgba_luminance(tmp_path: Path) -> None:
    rgb = _random((11, 14, 3), np.uint8)
    alpha = _random((11, 14, 1), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "rgba.tif",
        np.concatenate([rgb, alpha], axis=-1),
        photometric="rgb",
        extrasamples=["unassalpha"],
    )
    m_rgb = read_micrograph(tmp_path / "rgb.tif")
    m_rgba = read_micrograph(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(m_rgb.data, _bt601(rgb))
    np.testing.assert_array_equal(m_rgba.data, m_rgb.data)  # alpha dropped
    assert m_rgb.data.dtype == np.uint8
    assert m_rgba.metadata["channel_policy"] == "RGB -> luminance (BT.601), alpha dropped"
    assert m_rgb.metadata["shape"] == [11, 14, 3]


def test_tiff_rgb_uint16_and_float(tmp_path: Path) -> None:
    rgb16 = _random((6, 7, 3), np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "rgb16.tif").data, _bt601(rgb16))
    rgbf = RNG.random((6, 7, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgbf.tif", rgbf, photometric="rgb")
    data = read_micrograph(tmp_path / "rgbf.tif").data
    assert data.dtype == np.float32
    hand = 0.299 * rgbf[..., 0] + 0.587 * rgbf[..., 1] + 0.114 * rgbf[..., 2]
    np.testing.assert_allclose(data, hand, rtol=1e-6)


def test_tiff_palette(tmp_path: Path) -> None:
    index = _random((8, 9), np.uint8)
    # an 8-bit palette stored as TIFF's 16-bit colour map (entries x 257)
    palette8 = RNG.integers(0, 256, (3, 256)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p8.tif", index, photometric="palette", colormap=palette8 * 257)
    m = read_micrograph(tmp_path / "p8.tif")
    expected_rgb = np.moveaxis(palette8[:, index], 0, -1).astype(np.uint8)
    assert m.data.dtype == np.uint8
    np.testing.assert_array_equal(m.data, _bt601(expected_rgb))
    assert m.metadata["channel_policy"].startswith("palette")
    # a genuinely 16-bit colour map gives uint16 luminance
    palette16 = RNG.integers(0, 65536, (3, 256)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p16.tif", index, photometric="palette", colormap=palette16)
    m16 = read_micrograph(tmp_path / "p16.tif")
    assert m16.data.dtype == np.uint16
    np.testing.assert_array_equal(m16.data, _bt601(np.moveaxis(palette16[:, index], 0, -1)))


def test_extra_samples_minisblack_keep_channel_0(tmp_path: Path) -> None:
    arr = _random((7, 8, 5), np.uint16)
    path = tmp_path / "samples.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, arr[..., 0])
    assert m.metadata["channel_policy"] == "channel 0 of 5 samples per pixel"


def test_multi_page_tiff_selection(tmp_path: Path) -> None:
    stack = _random((4, 9, 10), np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    assert count_pages(path) == 4
    for page in range(4):
        m = read_micrograph(path, page=page)
        np.testing.assert_array_equal(m.data, stack[page])
        assert m.page == page
        assert m.metadata["n_pages"] == 4
    with pytest.raises(ValueError, match=r"Page 4 .*stack\.tif.*4 page\(s\).*count_pages"):
        read_micrograph(path, page=4)


def test_appended_series_are_pages_in_file_order(tmp_path: Path) -> None:
    a, b = _random((5, 6), np.uint8), _random((7, 3), np.uint8)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, a)
    tifffile.imwrite(path, b, append=True)
    assert count_pages(path) == 2
    np.testing.assert_array_equal(read_micrograph(path, page=0).data, a)
    np.testing.assert_array_equal(read_micrograph(path, page=1).data, b)


def test_bigtiff_multi_page(tmp_path: Path) -> None:
    stack = _random((3, 6, 7), np.float32)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, stack, bigtiff=True, photometric="minisblack")
    assert path.read_bytes()[:4] == b"II+\x00"
    assert count_pages(path) == 3
    np.testing.assert_array_equal(read_micrograph(path, page=2).data, stack[2])


def test_ome_channels_keep_channel_0_and_pages_run_over_time(tmp_path: Path) -> None:
    data = _random((2, 5, 6, 7), np.uint8)  # T, C, Y, X
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "TCYX", "PhysicalSizeX": 0.125, "PhysicalSizeXUnit": "µm"},
    )
    assert count_pages(path) == 2
    for t in range(2):
        m = read_micrograph(path, page=t)
        np.testing.assert_array_equal(m.data, data[t, 0])
        assert m.pixel_size_nm == pytest.approx(125.0)
        assert m.metadata["pixel_size_source"] == "OME-XML PhysicalSizeX"
        assert "channel 0 of 5" in m.metadata["channel_policy"]
        assert m.metadata["ome"] is True


def test_imagej_hyperstack_pages_and_pixel_size(tmp_path: Path) -> None:
    data = _random((2, 3, 5, 6), np.uint16)  # Z, C, Y, X
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.02, 1 / 0.02),
        metadata={"axes": "ZCYX", "unit": "um"},
    )
    assert count_pages(path) == 2
    m = read_micrograph(path, page=1)
    np.testing.assert_array_equal(m.data, data[1, 0])
    assert m.pixel_size_nm == pytest.approx(20.0)
    assert m.metadata["pixel_size_source"] == "ImageJ unit and XResolution"


# --------------------------------------------------------------------------- Pillow formats


@pytest.mark.parametrize(
    ("fmt", "dtype"),
    [("PNG", np.uint8), ("PNG", np.uint16), ("PNG", np.bool_), ("BMP", np.uint8)],
)
def test_pillow_round_trip(tmp_path: Path, fmt: str, dtype: type) -> None:
    arr = _random((12, 15), dtype)
    path = _save_pil(arr, tmp_path / f"a.{fmt.lower()}", fmt)
    m = read_micrograph(path)
    assert m.data.dtype == arr.dtype
    np.testing.assert_array_equal(m.data, arr)
    assert m.metadata["format"] == fmt.lower()
    assert m.pixel_size_nm is None


def test_jpeg_equals_pillows_decoding(tmp_path: Path) -> None:
    grey = _random((16, 24), np.uint8)
    path = _save_pil(grey, tmp_path / "g.jpg", "JPEG", quality=90)
    m = read_micrograph(path)
    assert m.data.dtype == np.uint8 and m.metadata["format"] == "jpeg"
    np.testing.assert_array_equal(m.data, _pil_decode(path))
    rgb = _random((16, 24, 3), np.uint8)
    path_rgb = _save_pil(rgb, tmp_path / "c.jpg", "JPEG", quality=90)
    np.testing.assert_array_equal(read_micrograph(path_rgb).data, _bt601(_pil_decode(path_rgb)))


def test_png_rgb_luminance_matches_hand_formula_and_pillow(tmp_path: Path) -> None:
    rgb = _random((20, 21, 3), np.uint8)
    path = _save_pil(rgb, tmp_path / "rgb.png", "PNG")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, _bt601(rgb))
    with Image.open(path) as im:
        pillow_l = np.asarray(im.convert("L")).astype(int)
    assert np.abs(m.data.astype(int) - pillow_l).max() <= 1  # Pillow rounds in fixed point
    assert m.metadata["channel_policy"] == "RGB -> luminance (BT.601)"
    assert m.metadata["dtype"] == "uint8" and m.metadata["shape"] == [20, 21, 3]


def test_png_rgba_drops_alpha(tmp_path: Path) -> None:
    rgb = _random((10, 11, 3), np.uint8)
    alpha = _random((10, 11, 1), np.uint8)
    path = _save_pil(np.concatenate([rgb, alpha], -1), tmp_path / "rgba.png", "PNG")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, _bt601(rgb))
    assert "alpha dropped" in m.metadata["channel_policy"]


def test_png_16_bit_colour_keeps_16_bits(tmp_path: Path) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")
    rgb = _random((6, 7, 3), np.uint16)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb))
    m = read_micrograph(tmp_path / "rgb16.png")
    assert m.data.dtype == np.uint16 and m.metadata["bit_depth"] == 16
    np.testing.assert_array_equal(m.data, _bt601(rgb))
    la = _random((6, 7, 2), np.uint16)
    (tmp_path / "la16.png").write_bytes(imagecodecs.png_encode(la))
    np.testing.assert_array_equal(read_micrograph(tmp_path / "la16.png").data, la[..., 0])


def test_png_grey_alpha_keeps_grey(tmp_path: Path) -> None:
    la = _random((10, 11, 2), np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    np.testing.assert_array_equal(read_micrograph(path).data, la[..., 0])


@pytest.mark.parametrize("transparency", [False, True])
def test_png_palette_goes_through_rgb(tmp_path: Path, transparency: bool) -> None:
    rgb = _random((12, 13, 3), np.uint8)
    im = Image.fromarray(rgb).convert("P")
    if transparency:
        im.info["transparency"] = 0
    path = tmp_path / "pal.png"
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
        palette_rgb = np.asarray(reopened.convert("RGB"))
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, _bt601(palette_rgb))
    assert m.metadata["channel_policy"].startswith("palette -> RGB -> luminance")


def test_pillow_files_have_one_page(tmp_path: Path) -> None:
    path = _save_pil(_random((5, 5), np.uint8), tmp_path / "a.png", "PNG")
    assert count_pages(path) == 1
    with pytest.raises(ValueError, match=r"Page 1 .*a\.png.*1 page"):
        read_micrograph(path, page=1)


# --------------------------------------------------------------------------- damaged files


def _png_bytes(arr: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("keep", [0.5, "no_iend"])
def test_truncated_png_raises_decode_error(tmp_path: Path, keep: float | str) -> None:
    data = _png_bytes(_random((40, 40), np.uint8))
    cut = len(data) - 12 if keep == "no_iend" else int(len(data) * keep)
    path = tmp_path / "cut.png"
    path.write_bytes(data[:cut])
    with pytest.raises(DecodeError, match=r"cut\.png.*PNG signature.*could not be decoded"):
        read_micrograph(path)


def test_corrupt_png_checksum_raises_decode_error(tmp_path: Path) -> None:
    data = bytearray(_png_bytes(_random((20, 20), np.uint8)))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip bits inside the compressed pixels
    path = tmp_path / "flip.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=r"flip\.png"):
        read_micrograph(path)


def test_truncated_jpeg_raises_decode_error(tmp_path: Path) -> None:
    path = _save_pil(_random((32, 32, 3), np.uint8), tmp_path / "x.jpg", "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"x\.jpg.*JPEG signature.*truncated"):
        read_micrograph(path)


def test_truncated_bmp_raises_decode_error(tmp_path: Path) -> None:
    path = _save_pil(_random((32, 32), np.uint8), tmp_path / "x.bmp", "BMP")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"x\.bmp.*BMP signature"):
        read_micrograph(path)


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_truncated_tiff_raises_decode_error(tmp_path: Path, compression: str | None) -> None:
    if compression == "lzw":
        pytest.importorskip("imagecodecs")
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path, _random((64, 64), np.uint16), compression=compression, photometric="minisblack"
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    with pytest.raises(DecodeError, match=r"cut\.tif.*TIFF signature.*could not be decoded"):
        read_micrograph(path)


def test_tiff_header_only_raises_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "header.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00")
    with pytest.raises(DecodeError, match=r"header\.tif"):
        read_micrograph(path)


def test_huge_png_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(lying_png(20000, 20000, size=100))
    assert path.stat().st_size == 100
    tracemalloc.start()
    try:
        with pytest.raises(
            ImageTooLargeError, match=r"bomb\.png.*20000x20000.*max_pixels=268,435,456"
        ):
            read_micrograph(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # nothing near the 400 MB the header announces was allocated


def test_huge_tiff_header_is_refused_before_decoding(tmp_path: Path) -> None:
    # a hand-made TIFF whose single strip claims a 30000 x 30000 uint8 image
    h = w = 30000
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 200)]
    tags += [(277, 3, 1), (278, 4, h), (279, 4, h * w)]
    ifd = struct.pack("<H", len(tags))
    for code, kind, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", code, kind, 1) + packed
    path = tmp_path / "huge.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + b"\x00" * 100)
    with pytest.raises(ImageTooLargeError, match=r"huge\.tif.*30000x30000"):
        read_micrograph(path)


def test_max_pixels_is_a_limit_that_can_be_raised(tmp_path: Path) -> None:
    arr = _random((10, 20), np.uint8)
    for path in (
        _save_pil(arr, tmp_path / "a.png", "PNG"),
        tmp_path / "a.tif",
    ):
        if path.suffix == ".tif":
            tifffile.imwrite(path, arr)
        with pytest.raises(ImageTooLargeError, match=r"200 pixels.*max_pixels=199.*larger"):
            read_micrograph(path, max_pixels=199)
        np.testing.assert_array_equal(read_micrograph(path, max_pixels=200).data, arr)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"page": -1}, r"'page' parameter must be an int >= 0. Got -1"),
        ({"page": 1.0}, r"'page' parameter must be an int >= 0. Got 1.0"),
        ({"page": True}, r"'page' parameter must be an int >= 0. Got True"),
        ({"max_pixels": 0}, r"'max_pixels' parameter must be an int >= 1. Got 0"),
    ],
)
def test_read_micrograph_validates_options(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = _save_pil(_random((4, 4), np.uint8), tmp_path / "a.png", "PNG")
    with pytest.raises(ValueError, match=match):
        read_micrograph(path, **kwargs)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_micrograph(tmp_path / "nope.tif")


# --------------------------------------------------------------------------- pixel sizes


@pytest.mark.parametrize(
    ("unit", "per_unit", "expected_nm"),
    [
        ("CENTIMETER", 1e7 / 5.0, 5.0),
        ("INCH", 2.54e7 / 0.5, 0.5),
        ("CENTIMETER", 1e7 / 1234.5, 1234.5),
    ],
)
def test_resolution_tag_pixel_size(
    tmp_path: Path, unit: str, per_unit: float, expected_nm: float
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path, _random((6, 6), np.uint16), resolution=(per_unit, per_unit), resolutionunit=unit
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(expected_nm, rel=1e-6)
    assert m.metadata["pixel_size_source"] == "TIFF XResolution and ResolutionUnit"


@pytest.mark.parametrize(
    ("resolution", "unit"),
    [
        ((72, 72), "INCH"),
        ((300, 300), "INCH"),
        ((28.35, 28.35), "CENTIMETER"),
        ((1e6, 1e6), "NONE"),
    ],
)
def test_screen_dpi_and_unitless_resolution_are_not_calibrations(
    tmp_path: Path, resolution: tuple[float, float], unit: str | None
) -> None:
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _random((6, 6), np.uint8), resolution=resolution, resolutionunit=unit)
    m = read_micrograph(path)
    assert m.pixel_size_nm is None
    assert m.metadata["pixel_size_source"] is None


def test_png_written_with_dpi_has_no_pixel_size(tmp_path: Path) -> None:
    path = _save_pil(_random((6, 6), np.uint8), tmp_path / "a.png", "PNG", dpi=(300, 300))
    assert read_micrograph(path).pixel_size_nm is None


@pytest.mark.parametrize(
    ("size", "unit", "expected"),
    [(0.25, "µm", 250.0), (3.5, "nm", 3.5), (12.0, "Å", 1.2), (0.002, "mm", 2000.0)],
)
def test_ome_pixel_size_units(tmp_path: Path, size: float, unit: str, expected: float) -> None:
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path,
        _random((5, 6), np.uint8),
        ome=True,
        metadata={"PhysicalSizeX": size, "PhysicalSizeXUnit": unit},
    )
    assert read_micrograph(path).pixel_size_nm == pytest.approx(expected)


def test_ome_pixel_size_unit_defaults_to_micrometre() -> None:
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
        '<Pixels PhysicalSizeX="0.5" SizeX="4" SizeY="4"/></Image>'
        '<Image ID="Image:1"><Pixels PhysicalSizeX="7" PhysicalSizeXUnit="nm"/></Image></OME>'
    )
    assert meta.pixel_size_ome(xml, 0) == pytest.approx(500.0)
    assert meta.pixel_size_ome(xml, 1) == pytest.approx(7.0)
    assert meta.pixel_size_ome("<OME><Image><Pixels/></Image></OME>") is None
    assert meta.pixel_size_ome("not xml") is None


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("um", 50.0), ("micron", 50.0), ("\\u00B5m", 50.0), ("nm", 0.05)],  # ImageJ escapes µ
)
def test_imagej_units(tmp_path: Path, unit: str, expected: float) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, _random((5, 6), np.uint8), imagej=True, resolution=(20, 20), metadata={"unit": unit}
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(expected)
    assert m.metadata["imagej"] is True


def test_imagej_without_unit_has_no_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _random((5, 6), np.uint8), imagej=True, resolution=(20, 20))
    assert read_micrograph(path).pixel_size_nm is None


_FEI_HEADER = (
    "[User]\r\nDate=03/14/2019\r\nTime=10:21:03 AM\r\n"
    "[System]\r\nSystemType=Helios NanoLab 660\r\n"
    "[Beam]\r\nHV=5000\r\n"
    "[Scan]\r\nPixelWidth=1.953125e-09\r\nPixelHeight=1.953125e-09\r\nHorFieldsize=6.25e-08\r\n"
    "[Image]\r\nResolutionX=32\r\nResolutionY=40\r\n"
)


@pytest.mark.parametrize("tag", [34680, 34682])
def test_fei_tag_pixel_size_and_info_bar(tmp_path: Path, tag: int) -> None:
    arr = _random((48, 32), np.uint8)  # 40 image rows + an 8-row data bar
    path = tmp_path / "fei.tif"
    tifffile.imwrite(
        path,
        arr,
        resolution=(72, 72),
        resolutionunit="INCH",
        extratags=[(tag, "s", 0, _FEI_HEADER, True)],
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(1.953125)
    assert m.metadata["pixel_size_source"] == "FEI [Scan] PixelWidth"
    assert m.metadata["instrument_tags"] == [{34680: "FEI_SFEG", 34682: "FEI_HELIOS"}[tag]]
    assert m.metadata["instrument"]["FEI"]["System"]["SystemType"] == "Helios NanoLab 660"
    json.dumps(m.metadata)
    assert detect_info_bar(m) == 8
    np.testing.assert_array_equal(crop(m.data, bottom=detect_info_bar(m)), arr[:40])


def test_fei_parser_on_tifffile_dicts() -> None:
    assert meta.pixel_size_fei({"Scan": {"PixelWidth": 2e-9}}) == pytest.approx(2.0)
    assert meta.pixel_size_fei({"EScan": {"PixelWidth": 3e-10}}) == pytest.approx(0.3)
    assert meta.pixel_size_fei({"Scan": {"PixelWidth": 0.0}}) is None
    assert meta.pixel_size_fei({"Beam": {"HV": 5000}}) is None
    assert meta.pixel_size_fei(None) is None


_ZEISS_HEADER = (
    "0\r\n0\r\n"
    "AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 1.25 \xb5m\r\n"
    "AP_PIXEL_SIZE\r\nPixel Size = 3.0 nm\r\n"
    "DP_DETECTOR_CHANNEL\r\nSignal A = SE2\r\n"
    "AP_MAG\r\nMag = 5.00 K X\r\n"
)


def test_zeiss_tag_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "zeiss.tif"
    payload = _ZEISS_HEADER.encode("latin-1")  # Zeiss writes the micro sign in Latin-1
    tifffile.imwrite(path, _random((6, 8), np.uint16), extratags=[(34118, "B", 0, payload, True)])
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(1250.0)
    assert m.metadata["pixel_size_source"] == "Zeiss AP_IMAGE_PIXEL_SIZE"
    assert m.metadata["instrument_tags"] == ["CZ_SEM"]
    assert m.metadata["instrument"]["CZ_SEM"]["dp_detector_channel"] == ["Signal A", "SE2"]
    json.dumps(m.metadata)
    assert detect_info_bar(m) == 0  # only FEI headers tell the bar's height


def test_zeiss_parser_on_tifffile_dicts() -> None:
    assert meta.pixel_size_zeiss(
        {"ap_image_pixel_size": ("Image Pixel Size", 2.233, "nm")}
    ) == pytest.approx(2.233)
    # the unsplit form, and the fallback key
    assert meta.pixel_size_zeiss({"ap_pixel_size": ("Pixel Size", "4 pm")}) == pytest.approx(4e-3)
    assert meta.pixel_size_zeiss({"ap_pixel_size": ("Pixel Size", 4.0, "furlong")}) is None
    assert meta.pixel_size_zeiss({"": (0, 0)}) is None


def test_units_and_resolution_helpers() -> None:
    for unit, nm in [("m", 1e9), ("µm", 1e3), ("μm", 1e3), ("microns", 1e3), ("Å", 0.1)]:
        assert meta.unit_to_nm(unit) == pytest.approx(nm)
    assert meta.unit_to_nm("pixel") is None
    assert meta.unit_to_nm("ms") is None  # not metres
    assert meta.unit_to_nm("inches") == pytest.approx(2.54e7)
    assert meta.unit_to_nm(None) is None
    assert meta.pixel_size_resolution(2e6, 3) == pytest.approx(5.0)
    assert meta.pixel_size_resolution(2e6, 1) is None  # ResolutionUnit NONE
    assert meta.pixel_size_resolution(2e6, None) is None  # no ResolutionUnit tag
    assert meta.pixel_size_resolution(96, 2) is None  # 96 dpi: a screen setting
    assert meta.pixel_size_imagej("um", 4.0) == pytest.approx(250.0)
    assert meta.pixel_size_imagej("pixel", 4.0) is None


def test_pixel_size_precedence_ome_over_resolution(tmp_path: Path) -> None:
    path = tmp_path / "both.ome.tif"
    tifffile.imwrite(
        path,
        _random((5, 6), np.uint8),
        ome=True,
        resolution=(1e7 / 9.0, 1e7 / 9.0),
        resolutionunit="CENTIMETER",
        metadata={"PhysicalSizeX": 4.0, "PhysicalSizeXUnit": "nm"},
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(4.0)
    assert m.metadata["pixel_size_source"] == "OME-XML PhysicalSizeX"


# --------------------------------------------------------------------------- DM3 / DM4

_DM_TYPES = {  # numpy dtype -> (DM image DataType, DM tag element type)
    np.dtype(np.int16): (1, 2),
    np.dtype(np.float32): (2, 6),
    np.dtype(np.uint8): (6, 10),
    np.dtype(np.uint16): (10, 4),
}


def _dm3_bytes(data: np.ndarray, *, scale: float, units: str) -> bytes:
    """A minimal little-endian DM3 file with one image (ImageList/ImageData)."""

    def name(text: str) -> bytes:
        raw = text.encode()
        return struct.pack(">H", len(raw)) + raw

    def group(label: str, tags: list[bytes]) -> bytes:
        return b"\x14" + name(label) + b"\x00\x00" + struct.pack(">I", len(tags)) + b"".join(tags)

    def number(label: str, etype: int, fmt: str, value: float) -> bytes:
        head = b"\x15" + name(label) + b"%%%%" + struct.pack(">II", 1, etype)
        return head + struct.pack("<" + fmt, value)

    def text(label: str, value: str) -> bytes:
        chars = b"".join(struct.pack("<H", ord(c)) for c in value)
        return b"\x15" + name(label) + b"%%%%" + struct.pack(">IIII", 3, 20, 4, len(value)) + chars

    datatype, eltype = _DM_TYPES[data.dtype]
    dims = [
        group(
            "",
            [number("Origin", 6, "f", 0.0), number("Scale", 6, "f", scale), text("Units", units)],
        )
        for _ in range(data.ndim)
    ]
    pixels = data.astype(data.dtype.newbyteorder("<")).tobytes()
    image_data = group(
        "ImageData",
        [
            group(
                "Calibrations",
                [
                    group(
                        "Brightness",
                        [
                            number("Origin", 6, "f", 0),
                            number("Scale", 6, "f", 1),
                            text("Units", ""),
                        ],
                    ),
                    group("Dimension", dims),
                ],
            ),
            b"\x15"
            + name("Data")
            + b"%%%%"
            + struct.pack(">IIII", 3, 20, eltype, data.size)
            + pixels,
            number("DataType", 3, "l", datatype),
            group("Dimensions", [number("", 5, "L", n) for n in data.shape[::-1]]),
            number("PixelDepth", 3, "l", data.dtype.itemsize),
        ],
    )
    image = group("", [image_data, group("ImageTags", []), text("Name", "test")])
    body = b"\x01\x00" + struct.pack(">I", 1) + group("ImageList", [image])
    return struct.pack(">III", 3, len(body) + 8, 1) + body + b"\x00" * 8


def test_dm_without_rosettasciio_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.dm3"
    path.write_bytes(_dm3_bytes(_random((4, 5), np.uint16), scale=1.0, units="nm"))
    assert sniff_format(path) == "dm"
    monkeypatch.setitem(sys.modules, "rsciio", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"a\.dm3.*pip install 'microscale\[em\]'"):
        read_micrograph(path)
    with pytest.raises(ImportError, match=r"microscale\[em\]"):
        count_pages(path)


def test_dm_reading_with_rosettasciio(tmp_path: Path) -> None:
    pytest.importorskip("rsciio")
    image = _random((6, 9), np.uint16)
    path = tmp_path / "a.dm3"
    path.write_bytes(_dm3_bytes(image, scale=0.25, units="nm"))
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, image)
    assert m.pixel_size_nm == pytest.approx(0.25)
    stack = _random((3, 4, 5), np.float32)
    path3 = tmp_path / "s.dm3"
    path3.write_bytes(_dm3_bytes(stack, scale=2.0, units="µm"))
    assert count_pages(path3) == 3
    m3 = read_micrograph(path3, page=2)
    np.testing.assert_array_equal(m3.data, stack[2])
    assert m3.pixel_size_nm == pytest.approx(2000.0)


def _fake_rsciio(monkeypatch: pytest.MonkeyPatch, signals: list[dict]) -> None:
    """A stand-in for rosettasciio's DM reader, returning the structure that rosettasciio
    0.15 returns for the DM3 files of ``_dm3_bytes`` (checked against the real package)."""
    dm = types.ModuleType("rsciio.digitalmicrograph")
    dm.file_reader = lambda filename, lazy=False: signals  # type: ignore[attr-defined]
    package = types.ModuleType("rsciio")
    package.digitalmicrograph = dm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rsciio", package)
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", dm)


def _axes(shape: tuple[int, ...], scale: float, units: str, n_nav: int) -> list[dict]:
    return [
        {"name": None, "size": n, "index_in_array": i, "scale": scale, "offset": 0.0,
         "units": units, "navigate": i < n_nav}
        for i, n in enumerate(shape)
    ]  # fmt: skip


def test_dm_frames_and_calibration_from_reader_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fake.dm4"
    path.write_bytes(struct.pack(">IQI", 4, 100, 1) + b"\x00" * 100)
    spectrum = np.arange(10.0)
    stack = _random((2, 4, 5), np.int16)
    rgba = np.zeros((3, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    rgb = _random((3, 4, 3), np.uint8)
    rgba["R"], rgba["G"], rgba["B"] = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    signals = [
        {"data": spectrum, "axes": _axes(spectrum.shape, 0.1, "eV", 0)},
        {"data": stack, "axes": _axes(stack.shape, 0.5, "µm", 1)},
        {"data": rgba, "axes": _axes(rgba.shape, 1.0, "", 0)},
    ]
    _fake_rsciio(monkeypatch, signals)
    assert count_pages(path) == 3  # two frames of the stack, the RGBA image; no spectrum
    m1 = read_micrograph(path, page=1)
    np.testing.assert_array_equal(m1.data, stack[1])
    assert m1.pixel_size_nm == pytest.approx(500.0)
    assert m1.metadata["pixel_size_source"] == "DM calibration"
    m2 = read_micrograph(path, page=2)
    np.testing.assert_array_equal(m2.data, _bt601(rgb))
    assert m2.pixel_size_nm is None
    with pytest.raises(ImageTooLargeError, match=r"fake\.dm4.*4x5"):
        read_micrograph(path, page=0, max_pixels=19)
    _fake_rsciio(monkeypatch, [signals[0]])
    with pytest.raises(UnsupportedFormatError, match=r"fake\.dm4.*without a 2-D image"):
        read_micrograph(path)


# --------------------------------------------------------------------------- discovery


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_is_recursive_sorted_and_lists_regular_files(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    for rel in ["b.tif", "a/z.png", "a/b/c.jpg", ".DS_Store", "a/.hidden/x.tif", "A.tif"]:
        _touch(root / rel)
    (root / "empty_dir").mkdir()
    os.mkfifo(root / "a" / "pipe")
    found = discover(root)
    rel = [p.relative_to(root.resolve()).as_posix() for p in found]
    assert rel == [".DS_Store", "A.tif", "a/.hidden/x.tif", "a/b/c.jpg", "a/z.png", "b.tif"]
    assert all(p.is_absolute() for p in found)
    assert discover(str(root)) == found  # deterministic, str or Path


def test_discover_never_leaves_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _touch(outside / "secret.tif")
    root = tmp_path / "archive"
    _touch(root / "in.tif")
    _touch(root / "sub" / "deep.tif")
    (root / "to_outside").symlink_to(outside, target_is_directory=True)
    (root / "file_outside.tif").symlink_to(outside / "secret.tif")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)
    (root / "dangling.tif").symlink_to(tmp_path / "missing.tif")
    (root / "alias.tif").symlink_to(root / "in.tif")
    (root / "ring_a").symlink_to(root / "ring_b")
    (root / "ring_b").symlink_to(root / "ring_a")

    top = root.resolve()
    assert [p.relative_to(top).as_posix() for p in discover(root)] == ["in.tif", "sub/deep.tif"]
    followed = discover(root, follow_symlinks=True)
    for p in followed:
        assert p.resolve().is_relative_to(top)
    # each file once, under the first path in sorted order
    assert [p.relative_to(top).as_posix() for p in followed] == ["alias.tif", "sub/deep.tif"]
    assert {p.resolve() for p in followed} == {top / "in.tif", top / "sub" / "deep.tif"}


def test_discover_follows_links_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _touch(root / "real" / "a.tif")
    (root / "zlink").symlink_to(root / "real", target_is_directory=True)
    top = root.resolve()
    assert [p.relative_to(top).as_posix() for p in discover(root, follow_symlinks=True)] == [
        "real/a.tif"
    ]


def test_discover_validates_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.*does not exist"):
        discover(tmp_path / "nope")
    f = _touch(tmp_path / "file.tif")
    with pytest.raises(NotADirectoryError, match=r"file\.tif.*not a folder"):
        discover(f)


def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = RNG.bytes(3 * 2**20 + 17)
    path = _touch(tmp_path / "blob.bin", data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the result type


def test_micrograph_is_frozen_and_metadata_json_serialisable(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, _random((4, 5), np.uint8))
    m = read_micrograph(path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.page = 3  # type: ignore[misc]
    assert m.shape == (4, 5)
    json.dumps(m.metadata)
    assert set(m.metadata) >= {
        "format",
        "dtype",
        "shape",
        "channel_policy",
        "bit_depth",
        "n_pages",
        "pixel_size_source",
        "instrument_tags",
    }


def test_detect_info_bar_without_metadata() -> None:
    assert detect_info_bar(Micrograph(np.zeros((5, 5)), None, "x")) == 0
    fei_scan = {"instrument": {"FEI": {"Scan": {"ResolutionY": 3}}}}
    assert detect_info_bar(Micrograph(np.zeros((5, 5)), None, "x", 0, fei_scan)) == 2
    too_big = {"instrument": {"FEI": {"Image": {"ResolutionY": 9}}}}
    assert detect_info_bar(Micrograph(np.zeros((5, 5)), None, "x", 0, too_big)) == 0


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
    image = _random((40, 60), np.uint8)
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


# --------------------------------------------------------------------------- tile


def _coverage(shape: tuple[int, int], origins: np.ndarray, s: int) -> np.ndarray:
    count = np.zeros(shape, dtype=int)
    for r, c in origins:
        count[r : r + s, c : c + s] += 1
    return count


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
    image = _random((10, 13), np.uint16)
    tiles, origins = tile(image, tile_size=4)
    assert sorted({int(r) for r in origins[:, 0]}) == [0, 4, 6]
    assert sorted({int(c) for c in origins[:, 1]}) == [0, 4, 8, 9]
    for t, (r, c) in zip(tiles, origins, strict=True):
        np.testing.assert_array_equal(t, image[r : r + 4, c : c + 4])
    assert (_coverage(image.shape, origins, 4) >= 1).all()
    assert (origins + 4 <= np.array(image.shape)).all()


def test_tile_stride_overlap() -> None:
    image = _random((9, 9), np.float32)
    tiles, origins = tile(image, tile_size=4, stride=2)
    assert sorted({int(r) for r in origins[:, 0]}) == [0, 2, 4, 5]
    assert len(tiles) == 16
    assert (_coverage(image.shape, origins, 4) >= 1).all()


def test_tile_pads_a_short_side_by_reflection() -> None:
    image = _random((5, 11), np.uint8)  # 5 >= 0.5 * 8: padded to 8 rows
    tiles, origins = tile(image, tile_size=8)
    assert origins.tolist() == [[0, 0], [0, 3]]
    padded = np.pad(image, ((0, 3), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(tiles[0], padded[:, :8])
    np.testing.assert_array_equal(tiles[1], padded[:, 3:11])
    np.testing.assert_array_equal(tiles[:, :5], np.stack([image[:, :8], image[:, 3:]]))
    valid = np.minimum(origins + 8, image.shape) - origins  # the documented record
    assert valid.tolist() == [[5, 8], [5, 8]]


def test_tile_pads_both_sides_of_a_small_image() -> None:
    image = _random((4, 6), np.int16)
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
