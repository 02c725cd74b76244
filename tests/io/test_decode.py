"""Reading micrographs (io/decode.py): format sniffing, TIFF and Pillow round trips, damaged
files, bombs, discovery.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from microscale.io import (
    DecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedFormatError,
    count_pages,
    discover,
    file_digest,
    read_micrograph,
    sniff_format,
)
from microscale.testing.hostile import lying_png
from tests.io.helpers import RNG, bt601, random_array, save_pil


def _pil_decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


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


def _png_bytes(arr: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("head", "expected"), _SIGNATURES)
def test_sniff_format_by_magic_bytes(tmp_path: Path, head: bytes, expected: str | None) -> None:
    path = tmp_path / "file.tif"  # the extension must not matter
    path.write_bytes(head)
    assert sniff_format(path) == expected


def test_sniff_ignores_extension_and_read_follows_the_bytes(tmp_path: Path) -> None:
    arr = random_array((9, 11), np.uint8)
    png_named_tif = save_pil(arr, tmp_path / "really_a_png.tif", "PNG")
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
    arr = random_array((13, 17), dtype)
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
    arr = random_array((8, 9), np.uint16)
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
    arr = random_array((10, 12), np.uint8)
    path = tmp_path / "white.tif"
    tifffile.imwrite(path, arr, photometric="miniswhite")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, 255 - arr)
    np.testing.assert_array_equal(m.data, _pil_decode(path))  # Pillow: mode L;I
    assert "MINISWHITE" in m.metadata["channel_policy"]


def test_bilevel_tiff_from_tifffile_default(tmp_path: Path) -> None:
    # tifffile writes bool as MINISWHITE by default; 1 then means black.
    arr = random_array((9, 10), np.bool_)
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, arr)
    m = read_micrograph(path)
    assert m.data.dtype == np.bool_
    np.testing.assert_array_equal(m.data, ~arr)


def test_tiff_rgb_and_rgba_luminance(tmp_path: Path) -> None:
    rgb = random_array((11, 14, 3), np.uint8)
    alpha = random_array((11, 14, 1), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "rgba.tif",
        np.concatenate([rgb, alpha], axis=-1),
        photometric="rgb",
        extrasamples=["unassalpha"],
    )
    m_rgb = read_micrograph(tmp_path / "rgb.tif")
    m_rgba = read_micrograph(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(m_rgb.data, bt601(rgb))
    np.testing.assert_array_equal(m_rgba.data, m_rgb.data)  # alpha dropped
    assert m_rgb.data.dtype == np.uint8
    assert m_rgba.metadata["channel_policy"] == "RGB -> luminance (BT.601), alpha dropped"
    assert m_rgb.metadata["shape"] == [11, 14, 3]


def test_tiff_rgb_uint16_and_float(tmp_path: Path) -> None:
    rgb16 = random_array((6, 7, 3), np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "rgb16.tif").data, bt601(rgb16))
    rgbf = RNG.random((6, 7, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgbf.tif", rgbf, photometric="rgb")
    data = read_micrograph(tmp_path / "rgbf.tif").data
    assert data.dtype == np.float32
    hand = 0.299 * rgbf[..., 0] + 0.587 * rgbf[..., 1] + 0.114 * rgbf[..., 2]
    np.testing.assert_allclose(data, hand, rtol=1e-6)


def test_tiff_palette(tmp_path: Path) -> None:
    index = random_array((8, 9), np.uint8)
    # an 8-bit palette stored as TIFF's 16-bit colour map (entries x 257)
    palette8 = RNG.integers(0, 256, (3, 256)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p8.tif", index, photometric="palette", colormap=palette8 * 257)
    m = read_micrograph(tmp_path / "p8.tif")
    expected_rgb = np.moveaxis(palette8[:, index], 0, -1).astype(np.uint8)
    assert m.data.dtype == np.uint8
    np.testing.assert_array_equal(m.data, bt601(expected_rgb))
    assert m.metadata["channel_policy"].startswith("palette")
    # a genuinely 16-bit colour map gives uint16 luminance
    palette16 = RNG.integers(0, 65536, (3, 256)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p16.tif", index, photometric="palette", colormap=palette16)
    m16 = read_micrograph(tmp_path / "p16.tif")
    assert m16.data.dtype == np.uint16
    np.testing.assert_array_equal(m16.data, bt601(np.moveaxis(palette16[:, index], 0, -1)))


def test_extra_samples_minisblack_keep_channel_0(tmp_path: Path) -> None:
    arr = random_array((7, 8, 5), np.uint16)
    path = tmp_path / "samples.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, arr[..., 0])
    assert m.metadata["channel_policy"] == "channel 0 of 5 samples per pixel"


def test_multi_page_tiff_selection(tmp_path: Path) -> None:
    stack = random_array((4, 9, 10), np.uint16)
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
    a, b = random_array((5, 6), np.uint8), random_array((7, 3), np.uint8)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, a)
    tifffile.imwrite(path, b, append=True)
    assert count_pages(path) == 2
    np.testing.assert_array_equal(read_micrograph(path, page=0).data, a)
    np.testing.assert_array_equal(read_micrograph(path, page=1).data, b)


def test_bigtiff_multi_page(tmp_path: Path) -> None:
    stack = random_array((3, 6, 7), np.float32)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, stack, bigtiff=True, photometric="minisblack")
    assert path.read_bytes()[:4] == b"II+\x00"
    assert count_pages(path) == 3
    np.testing.assert_array_equal(read_micrograph(path, page=2).data, stack[2])


def test_ome_channels_keep_channel_0_and_pages_run_over_time(tmp_path: Path) -> None:
    data = random_array((2, 5, 6, 7), np.uint8)  # T, C, Y, X
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
    data = random_array((2, 3, 5, 6), np.uint16)  # Z, C, Y, X
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
    arr = random_array((12, 15), dtype)
    path = save_pil(arr, tmp_path / f"a.{fmt.lower()}", fmt)
    m = read_micrograph(path)
    assert m.data.dtype == arr.dtype
    np.testing.assert_array_equal(m.data, arr)
    assert m.metadata["format"] == fmt.lower()
    assert m.pixel_size_nm is None


def test_jpeg_equals_pillows_decoding(tmp_path: Path) -> None:
    grey = random_array((16, 24), np.uint8)
    path = save_pil(grey, tmp_path / "g.jpg", "JPEG", quality=90)
    m = read_micrograph(path)
    assert m.data.dtype == np.uint8 and m.metadata["format"] == "jpeg"
    np.testing.assert_array_equal(m.data, _pil_decode(path))
    rgb = random_array((16, 24, 3), np.uint8)
    path_rgb = save_pil(rgb, tmp_path / "c.jpg", "JPEG", quality=90)
    np.testing.assert_array_equal(read_micrograph(path_rgb).data, bt601(_pil_decode(path_rgb)))


def test_png_rgb_luminance_matches_hand_formula_and_pillow(tmp_path: Path) -> None:
    rgb = random_array((20, 21, 3), np.uint8)
    path = save_pil(rgb, tmp_path / "rgb.png", "PNG")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, bt601(rgb))
    with Image.open(path) as im:
        pillow_l = np.asarray(im.convert("L")).astype(int)
    assert np.abs(m.data.astype(int) - pillow_l).max() <= 1  # Pillow rounds in fixed point
    assert m.metadata["channel_policy"] == "RGB -> luminance (BT.601)"
    assert m.metadata["dtype"] == "uint8" and m.metadata["shape"] == [20, 21, 3]


def test_png_rgba_drops_alpha(tmp_path: Path) -> None:
    rgb = random_array((10, 11, 3), np.uint8)
    alpha = random_array((10, 11, 1), np.uint8)
    path = save_pil(np.concatenate([rgb, alpha], -1), tmp_path / "rgba.png", "PNG")
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, bt601(rgb))
    assert "alpha dropped" in m.metadata["channel_policy"]


def test_png_16_bit_colour_keeps_16_bits(tmp_path: Path) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")
    rgb = random_array((6, 7, 3), np.uint16)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb))
    m = read_micrograph(tmp_path / "rgb16.png")
    assert m.data.dtype == np.uint16 and m.metadata["bit_depth"] == 16
    np.testing.assert_array_equal(m.data, bt601(rgb))
    la = random_array((6, 7, 2), np.uint16)
    (tmp_path / "la16.png").write_bytes(imagecodecs.png_encode(la))
    np.testing.assert_array_equal(read_micrograph(tmp_path / "la16.png").data, la[..., 0])


def test_png_grey_alpha_keeps_grey(tmp_path: Path) -> None:
    la = random_array((10, 11, 2), np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    np.testing.assert_array_equal(read_micrograph(path).data, la[..., 0])


@pytest.mark.parametrize("transparency", [False, True])
def test_png_palette_goes_through_rgb(tmp_path: Path, transparency: bool) -> None:
    rgb = random_array((12, 13, 3), np.uint8)
    im = Image.fromarray(rgb).convert("P")
    if transparency:
        im.info["transparency"] = 0
    path = tmp_path / "pal.png"
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
        palette_rgb = np.asarray(reopened.convert("RGB"))
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, bt601(palette_rgb))
    assert m.metadata["channel_policy"].startswith("palette -> RGB -> luminance")


def test_pillow_files_have_one_page(tmp_path: Path) -> None:
    path = save_pil(random_array((5, 5), np.uint8), tmp_path / "a.png", "PNG")
    assert count_pages(path) == 1
    with pytest.raises(ValueError, match=r"Page 1 .*a\.png.*1 page"):
        read_micrograph(path, page=1)


@pytest.mark.parametrize("keep", [0.5, "no_iend"])
def test_truncated_png_raises_decode_error(tmp_path: Path, keep: float | str) -> None:
    data = _png_bytes(random_array((40, 40), np.uint8))
    cut = len(data) - 12 if keep == "no_iend" else int(len(data) * keep)
    path = tmp_path / "cut.png"
    path.write_bytes(data[:cut])
    with pytest.raises(DecodeError, match=r"cut\.png.*PNG signature.*could not be decoded"):
        read_micrograph(path)


def test_corrupt_png_checksum_raises_decode_error(tmp_path: Path) -> None:
    data = bytearray(_png_bytes(random_array((20, 20), np.uint8)))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip bits inside the compressed pixels
    path = tmp_path / "flip.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=r"flip\.png"):
        read_micrograph(path)


def test_truncated_jpeg_raises_decode_error(tmp_path: Path) -> None:
    path = save_pil(random_array((32, 32, 3), np.uint8), tmp_path / "x.jpg", "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"x\.jpg.*JPEG signature.*truncated"):
        read_micrograph(path)


def test_truncated_bmp_raises_decode_error(tmp_path: Path) -> None:
    path = save_pil(random_array((32, 32), np.uint8), tmp_path / "x.bmp", "BMP")
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
        path, random_array((64, 64), np.uint16), compression=compression, photometric="minisblack"
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
    arr = random_array((10, 20), np.uint8)
    for path in (
        save_pil(arr, tmp_path / "a.png", "PNG"),
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
    path = save_pil(random_array((4, 4), np.uint8), tmp_path / "a.png", "PNG")
    with pytest.raises(ValueError, match=match):
        read_micrograph(path, **kwargs)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_micrograph(tmp_path / "nope.tif")


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
