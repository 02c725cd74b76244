"""SEM info bars are cropped whatever the vendor, and the crop is recorded per image."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from microscale.ingest import ingest_archive
from microscale.store import image_table, open_store, read_tiles
from microscale.testing.sem import ZEISS_HEADER, sem_specimen, with_info_bar

TILE = 256


def _zeiss(path, image):
    tifffile.imwrite(path, image, extratags=[(34118, "B", 0, ZEISS_HEADER.encode(), True)])


def test_a_zeiss_data_zone_is_cropped_and_recorded(tmp_path):
    specimen = sem_specimen()  # 1024 x 768, like the nanoporous gold
    bar = 77
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _zeiss(a / "npg.tif", with_info_bar(specimen, bar))
    tifffile.imwrite(b / "npg_cropped.tif", specimen[:-bar])  # the oracle: cropped by hand
    report = ingest_archive(a, tmp_path / "s1", tile_size=TILE)
    oracle = ingest_archive(b, tmp_path / "s2", tile_size=TILE, crop_bottom=0)
    assert report.outcomes["npg.tif"]["status"] == "processed"
    assert report.n_tiles == oracle.n_tiles == 12  # 3 rows of tiles x 4, none in the bar
    got, want = open_store(tmp_path / "s1"), open_store(tmp_path / "s2")
    np.testing.assert_array_equal(read_tiles(got), read_tiles(want))
    table = image_table(got)
    assert table["crop_rows"].tolist() == [[0, bar]]
    assert table["crop_source"].tolist() == ["detected"]
    assert image_table(want)["crop_source"].tolist() == ["none"]
    assert table["pixel_size_nm"].tolist() == pytest.approx([0.543])


@pytest.mark.parametrize(
    ("crop_bottom", "rows", "source"), [("auto", 77, "detected"), (0, 0, "none"), (40, 40, "user")]
)
def test_the_crop_can_be_overridden(tmp_path, crop_bottom, rows, source):
    a = tmp_path / "a"
    a.mkdir()
    _zeiss(a / "npg.tif", with_info_bar(sem_specimen(), 77))
    ingest_archive(a, tmp_path / "s", tile_size=TILE, crop_bottom=crop_bottom)
    table = image_table(open_store(tmp_path / "s"))
    assert table["crop_rows"].tolist() == [[0, rows]]
    assert table["crop_source"].tolist() == [source]


def test_a_micrograph_without_a_bar_keeps_every_row(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    dark = sem_specimen().astype(np.float64)
    dark[-100:] *= 0.15  # simply dark at the bottom
    tifffile.imwrite(a / "dark.tif", dark.astype(np.uint8))
    report = ingest_archive(a, tmp_path / "s", tile_size=TILE)
    table = image_table(open_store(tmp_path / "s"))
    assert table["crop_rows"].tolist() == [[0, 0]] and table["crop_source"].tolist() == ["none"]
    assert report.n_tiles == 12


@pytest.mark.slow
def test_the_crop_reaches_the_map(tmp_path):
    from microscale.mapping import map_store
    from microscale.stages.distances import run_distances
    from microscale.stages.features import run_features
    from microscale.stages.image_features import image_features

    a = tmp_path / "a"
    a.mkdir()
    _zeiss(a / "npg.tif", with_info_bar(sem_specimen(), 77))
    tifffile.imwrite(a / "plain.tif", sem_specimen(seed=3))
    store = tmp_path / "s"
    ingest_archive(a, store, tile_size=TILE)
    run_features(store, descriptor="ps")
    image_features(store, descriptor="ps")
    run_distances(store, descriptor="ps", block_size=2)
    ds = map_store(store, descriptors=["ps"], n_components=[1], archive=a)
    by_path = dict(zip(ds.image_path.values, range(ds.sizes["image"]), strict=True))
    npg, plain = by_path["npg.tif"], by_path["plain.tif"]
    assert ds.crop_rows.values[npg] == 77 and ds.crop_rows.values[plain] == 0
    assert ds.crop_edge.values[npg] == "bottom"
    assert ds.crop_source.values[npg] == "detected"
    assert ds.crop_source.values[plain] == "none"
