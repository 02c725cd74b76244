"""Micrograph metadata (io/metadata.py): pixel sizes of every source, the result type, info bars."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from microscale.io import (
    Micrograph,
    crop,
    detect_info_bar,
    read_micrograph,
)
from microscale.io import metadata as meta
from tests.io.helpers import random_array, save_pil

_FEI_HEADER = (
    "[User]\r\nDate=03/14/2019\r\nTime=10:21:03 AM\r\n"
    "[System]\r\nSystemType=Helios NanoLab 660\r\n"
    "[Beam]\r\nHV=5000\r\n"
    "[Scan]\r\nPixelWidth=1.953125e-09\r\nPixelHeight=1.953125e-09\r\nHorFieldsize=6.25e-08\r\n"
    "[Image]\r\nResolutionX=32\r\nResolutionY=40\r\n"
)

_ZEISS_HEADER = (
    "0\r\n0\r\n"
    "AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 1.25 \xb5m\r\n"
    "AP_PIXEL_SIZE\r\nPixel Size = 3.0 nm\r\n"
    "DP_DETECTOR_CHANNEL\r\nSignal A = SE2\r\n"
    "AP_MAG\r\nMag = 5.00 K X\r\n"
)


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
        path, random_array((6, 6), np.uint16), resolution=(per_unit, per_unit), resolutionunit=unit
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
    tifffile.imwrite(
        path, random_array((6, 6), np.uint8), resolution=resolution, resolutionunit=unit
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm is None
    assert m.metadata["pixel_size_source"] is None


def test_png_written_with_dpi_has_no_pixel_size(tmp_path: Path) -> None:
    path = save_pil(random_array((6, 6), np.uint8), tmp_path / "a.png", "PNG", dpi=(300, 300))
    assert read_micrograph(path).pixel_size_nm is None


@pytest.mark.parametrize(
    ("size", "unit", "expected"),
    [(0.25, "µm", 250.0), (3.5, "nm", 3.5), (12.0, "Å", 1.2), (0.002, "mm", 2000.0)],
)
def test_ome_pixel_size_units(tmp_path: Path, size: float, unit: str, expected: float) -> None:
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path,
        random_array((5, 6), np.uint8),
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
        path,
        random_array((5, 6), np.uint8),
        imagej=True,
        resolution=(20, 20),
        metadata={"unit": unit},
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(expected)
    assert m.metadata["imagej"] is True


def test_imagej_without_unit_has_no_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, random_array((5, 6), np.uint8), imagej=True, resolution=(20, 20))
    assert read_micrograph(path).pixel_size_nm is None


@pytest.mark.parametrize("tag", [34680, 34682])
def test_fei_tag_pixel_size_and_info_bar(tmp_path: Path, tag: int) -> None:
    arr = random_array((48, 32), np.uint8)  # 40 image rows + an 8-row data bar
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


def test_zeiss_tag_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "zeiss.tif"
    payload = _ZEISS_HEADER.encode("latin-1")  # Zeiss writes the micro sign in Latin-1
    tifffile.imwrite(
        path, random_array((6, 8), np.uint16), extratags=[(34118, "B", 0, payload, True)]
    )
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
        random_array((5, 6), np.uint8),
        ome=True,
        resolution=(1e7 / 9.0, 1e7 / 9.0),
        resolutionunit="CENTIMETER",
        metadata={"PhysicalSizeX": 4.0, "PhysicalSizeXUnit": "nm"},
    )
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(4.0)
    assert m.metadata["pixel_size_source"] == "OME-XML PhysicalSizeX"


# --------------------------------------------------------------------------- the result type


def test_micrograph_is_frozen_and_metadata_json_serialisable(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, random_array((4, 5), np.uint8))
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
