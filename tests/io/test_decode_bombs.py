"""Tile-offset bombs: TIFF pages whose tiles or strips share bytes are refused from the header.

The crafted file of issue 13: a 117 KB tiled TIFF declaring 20480 x 20480 pixels whose 6400
tile offsets all point at the same 64 KiB. Counting stored bytes tile by tile judged it
genuine, and it was streamed. Nothing here decodes a bomb.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from microscale.io import (
    DecompressionBombError,
    ImageTooLargeError,
    open_tiled_page,
    page_shape,
    read_micrograph,
    read_regions,
)
from microscale.testing.hostile import shared_tile_tiff, sparse_tiff


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.tif"
    shared_tile_tiff(path)  # 20480 x 20480 in 6400 tiles, all at the same offset
    return path


def test_the_crafted_file_is_the_one_of_the_issue(bomb):
    assert 100_000 < bomb.stat().st_size < 120_000
    with tifffile.TiffFile(bomb) as tif:
        page = tif.pages.first
        assert page.shape == (20480, 20480) and page.is_tiled
        assert len(page.dataoffsets) == 6400 and len(set(page.dataoffsets)) == 1


@pytest.mark.parametrize(
    "read",
    [
        lambda p: read_micrograph(p),
        lambda p: read_micrograph(p, max_pixels=20480**2),  # within budget: still refused
        lambda p: open_tiled_page(p),
        lambda p: next(read_regions(p, region=256)),
        lambda p: page_shape(p),
    ],
    ids=["read", "read-large-budget", "open-tiled", "regions", "page-shape"],
)
def test_shared_tile_offsets_are_refused_as_a_bomb(bomb, read):
    with pytest.raises(DecompressionBombError) as err:
        read(bomb)
    message = str(err.value)
    assert str(bomb) in message and "decompression bomb" in message
    assert "20480x20480" in message and "6,399 of them share or overlap" in message
    assert not err.value.streamable
    assert isinstance(err.value, ImageTooLargeError)  # a bomb is refused as too large


def test_a_ten_gigapixel_declaration_is_refused_fast(tmp_path):
    path = tmp_path / "huge.tif"
    shared_tile_tiff(path, side=100_000)  # 10**10 pixels, 152,881 tiles, ~1.3 MB
    assert path.stat().st_size < 1.4e6
    with pytest.raises(DecompressionBombError, match="10,000,000,000 pixels"):
        read_micrograph(path)
    with pytest.raises(DecompressionBombError, match="152,880 of them share"):
        open_tiled_page(path)


def test_a_sparse_declaration_is_judged_by_its_bytes_above_the_budget(tmp_path):
    path = tmp_path / "sparse.tif"
    sparse_tiff(path)  # 10**10 pixels, every tile empty: no bytes shared
    assert page_shape(path) == (100_000, 100_000)  # the declaration, read from the header
    for read in (read_micrograph, open_tiled_page, lambda p: page_shape(p, max_pixels=2**28)):
        with pytest.raises(DecompressionBombError, match="stores 0 bytes"):
            read(path)


def test_overlapping_strips_are_refused_too(tmp_path):
    path = tmp_path / "strips.tif"
    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(path, image, rowsperstrip=8)  # 8 strips of 768 bytes
    np.testing.assert_array_equal(read_micrograph(path).data, image)  # genuine: read
    with tifffile.TiffFile(path) as tif:
        offsets_tag = tif.pages.first.tags["StripOffsets"]
        offsets = list(tif.pages.first.dataoffsets)
        at, kind = offsets_tag.valueoffset, offsets_tag.dtype
    raw = bytearray(path.read_bytes())
    code = {3: "<H", 4: "<I"}[int(kind)]
    step = struct.calcsize(code)
    struct.pack_into(code, raw, at + 3 * step, offsets[2] + 100)  # strip 3 starts in strip 2
    path.write_bytes(bytes(raw))
    with pytest.raises(DecompressionBombError, match="1 of them share or overlap"):
        read_micrograph(path)


def test_genuine_tiled_and_sparse_pages_are_not_bombs(tmp_path):
    path = tmp_path / "tiled.tif"
    image = np.random.default_rng(0).integers(0, 4000, (512, 384)).astype(np.uint16)
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")
    np.testing.assert_array_equal(read_micrograph(path).data, image)
    assert page_shape(path, max_pixels=512 * 384) == (512, 384)
    small = tmp_path / "small_sparse.tif"
    sparse_tiff(small, side=512, tile_side=256)  # empty tiles are fill, not shared bytes
    assert read_micrograph(small).data.shape == (512, 512)
