"""The pixel budget cannot be fooled: bombs fail, oversize declarations are skipped with numbers.

Issue 13: a 117 KB tiled TIFF whose 6400 tile offsets share the same bytes (20480 x 20480
declared) was judged genuine and streamed; a 10^10-pixel declaration was accepted the same
way. None of these tests decodes a bomb.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from microscale.ingest import MAX_TILES_PER_IMAGE, ingest_archive
from microscale.store import image_table, open_store, read_manifest
from microscale.testing.hostile import shared_tile_tiff, sparse_tiff


def _genuine(path, side=512):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (side, side)).astype(np.uint16)
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")


def test_the_tile_offset_bomb_fails_as_a_bomb_and_the_others_go_on(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    shared_tile_tiff(a / "bomb.tif")  # exactly the crafted file: 20480^2, 6400 shared tiles
    shared_tile_tiff(a / "giga.tif", side=100_000)  # 10^10 pixels declared, ~1.3 MB
    _genuine(a / "ok.tif")
    report = ingest_archive(a, tmp_path / "store", tile_size=64)
    for name, side in (("bomb.tif", 20480), ("giga.tif", 100_000)):
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("failed", "bomb"), outcome
        assert f"{name}' is a decompression bomb" in outcome["reason"]
        assert f"{side}x{side}" in outcome["reason"] and "share or overlap" in outcome["reason"]
    assert report.outcomes["ok.tif"]["status"] == "processed"
    assert report.n_images == 1 and report.n_tiles == 64
    # the ledger says the same
    files = read_manifest(open_store(tmp_path / "store"))["files"]
    assert (files["bomb.tif"]["status"], files["bomb.tif"]["kind"]) == ("failed", "bomb")


def test_a_ten_gigapixel_declaration_is_skipped_by_the_tile_cap_with_its_numbers(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    sparse_tiff(a / "giga.tif")  # 10^10 pixels, no bytes shared
    # even with a pixel budget that admits it, the tiles it would make are counted
    report = ingest_archive(a, tmp_path / "store", max_pixels=10**10)
    outcome = report.outcomes["giga.tif"]
    assert (outcome["status"], outcome["kind"]) == ("skipped", "too large"), outcome
    for number in ("100000x100000", "10,000,000,000", "152,881 tiles", "max_tiles_per_image=1,600"):
        assert number in outcome["reason"], outcome["reason"]
    # with the default budget its bytes betray it as a bomb, still from the header
    report = ingest_archive(a, tmp_path / "store2")
    assert report.outcomes["giga.tif"]["kind"] == "bomb"


def test_the_tile_cap_holds_whatever_the_bytes(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    _genuine(a / "big.tif", side=1024)  # a genuine image: 256 tiles of 64 pixels
    # read whole, and streamed (above max_pixels), it is skipped before it is read
    for max_pixels in (2**28, 1024 * 256):
        report = ingest_archive(
            a, tmp_path / f"s{max_pixels}", tile_size=64, max_pixels=max_pixels,
            max_tiles_per_image=100,
        )  # fmt: skip
        outcome = report.outcomes["big.tif"]
        assert (outcome["status"], outcome["kind"]) == ("skipped", "too large"), outcome
        assert "256 tiles of 64 pixels, more than max_tiles_per_image=100" in outcome["reason"]
    report = ingest_archive(a, tmp_path / "ok", tile_size=64, max_tiles_per_image=256)
    assert report.outcomes["big.tif"]["status"] == "processed" and report.n_tiles == 256
    report = ingest_archive(a, tmp_path / "none", tile_size=64, max_tiles_per_image=None)
    assert report.n_tiles == 256


def test_the_cap_is_checked_after_resampling(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    image = np.random.default_rng(1).integers(0, 255, (128, 128)).astype(np.uint8)
    tifffile.imwrite(
        a / "x.tif", image, resolution=(1e7 / 10, 1e7 / 10), resolutionunit="CENTIMETER"
    )
    # 10 nm pixels resampled to 2.5 nm: 512 x 512, 64 tiles of 64 pixels
    report = ingest_archive(
        a, tmp_path / "s", tile_size=64, pixel_size_nm=2.5, max_tiles_per_image=16
    )
    outcome = report.outcomes["x.tif"]
    assert (outcome["status"], outcome["kind"]) == ("skipped", "too large"), outcome
    assert "512x512" in outcome["reason"] and "64 tiles" in outcome["reason"]


def test_the_default_cap():
    # 1% of a run of 10^4 images of 1024 x 1024 pixels in 256-pixel tiles (16 each)
    assert MAX_TILES_PER_IMAGE == 10**4 * 16 // 100
    with pytest.raises(ValueError, match="max_tiles_per_image"):
        ingest_archive(".", "unused", max_tiles_per_image=0)


def test_image_table_of_a_store_made_before_crops_were_recorded(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    _genuine(a / "x.tif", side=128)
    ingest_archive(a, tmp_path / "store", tile_size=64)
    st = open_store(tmp_path / "store")
    for name in ("crop_rows", "crop_source"):  # as an old store: the arrays are missing
        del st.group[name]
    table = image_table(open_store(tmp_path / "store"))
    assert table["crop_rows"].tolist() == [[-1, -1]] and table["crop_source"].tolist() == [""]
    _genuine(a / "y.tif", side=256)
    ingest_archive(a, tmp_path / "store", tile_size=64)  # the arrays are created on append
    table = image_table(open_store(tmp_path / "store"))
    assert table["crop_rows"].tolist() == [[-1, -1], [0, 0]]
    assert table["crop_source"].tolist() == ["", "none"]
