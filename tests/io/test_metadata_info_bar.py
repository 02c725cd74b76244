"""SEM information bars of every vendor: found from the vendor's header, else in the pixels."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tifffile

from microscale.io import InfoBar, Micrograph, detected_info_bar, info_bar, read_micrograph
from microscale.io.metadata import row_mode_fractions
from microscale.testing.sem import ZEISS_HEADER
from microscale.testing.sem import sem_specimen as _specimen
from microscale.testing.sem import with_info_bar as _with_bar


def test_row_mode_fractions_against_a_loop():
    rows = np.random.default_rng(0).integers(0, 5, (20, 33))
    expected = [np.bincount(r).max() / r.size for r in rows]
    np.testing.assert_allclose(row_mode_fractions(rows), expected)


@pytest.mark.parametrize("rows", [12, 20, 48, 77, 120, 180])
@pytest.mark.parametrize(
    ("fill", "ink"),
    [(0, 255), (255, 0), (128, 90), (30, 60)],  # black, white, grey low-contrast, dark dim
    ids=["black", "white", "grey-low-contrast", "dark-dim"],
)
@pytest.mark.parametrize("edge", ["bottom", "top"])
def test_bars_of_several_heights_and_contrasts_are_detected(rows, fill, ink, edge):
    image = _with_bar(_specimen(), rows, fill=fill, ink=ink, edge=edge)
    bar = detected_info_bar(image)
    found = bar.bottom if edge == "bottom" else bar.top
    assert abs(found - rows) <= 2, bar
    assert bar.source == "detected" and bar.edge == edge and bar.rows == found


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_bars_are_detected_in_16_bit_and_float_images(dtype):
    image = _with_bar(_specimen(dtype=dtype), 64, fill=0, ink=np.iinfo(np.uint16).max)
    assert detected_info_bar(image) == InfoBar(bottom=64, source="detected")


@functools.cache
def _no_bar_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    m = _specimen().astype(np.float64)
    h, w = m.shape
    cases = {}
    x = m.copy()
    x[-100:] *= 0.15
    cases["bottom rows simply dark"] = x
    x = m.copy()
    x[-100:] = rng.poisson(0.4, (100, w))  # dark and clipped at 0: most pixels are 0
    cases["dark, clipped at zero, sharp edge"] = x
    x = m.copy()
    x[-150:] *= np.linspace(1, 0, 150)[:, None]
    cases["vignette"] = x
    ramp = np.linspace(0, 255, h)[:, None] * np.ones((1, w))
    cases["gradient"] = ramp
    cases["noisy gradient"] = ramp + rng.normal(0, 5, (h, w))
    x = m.copy()
    x[-40:-36] = 255  # a saturated horizontal feature near the bottom
    cases["bright line near the bottom"] = x
    x = m.copy()
    x[-3:] = 255
    cases["bright line at the edge"] = x
    x = m.copy()
    x[-60:] += 150  # a bright, partly saturated band
    cases["bright band"] = x
    stripes = (np.sin(np.arange(h) / 6)[:, None] * 80 + 128) * np.ones((1, w))
    cases["horizontal stripes"] = stripes + rng.normal(0, 8, (h, w))
    cases["noise-free horizontal stripes"] = stripes
    cases["binary"] = (m > 120) * 255.0
    return {k: np.clip(v, 0, 255).astype(np.uint8) for k, v in cases.items()}


@pytest.mark.parametrize("case", sorted(_no_bar_cases()))
def test_micrographs_without_a_bar_are_not_cropped(case):
    assert detected_info_bar(_no_bar_cases()[case]) == InfoBar()


def test_a_flat_fill_without_marks_is_cropped_like_a_bar():
    image = _specimen()
    image[-120:] = 0  # e.g. the padding of a rotated or stitched image: no specimen there
    assert detected_info_bar(image) == InfoBar(bottom=120, source="detected")


def test_a_band_above_the_size_cap_is_not_a_bar():
    image = _with_bar(_specimen(), 240)  # 31% of 768 rows
    assert detected_info_bar(image) == InfoBar()
    assert detected_info_bar(image, max_fraction=0.4).bottom == 240


def test_small_images_are_left_alone():
    assert detected_info_bar(np.zeros((20, 20), np.uint8)) == InfoBar()
    with pytest.raises(ValueError, match="max_fraction"):
        detected_info_bar(np.zeros((64, 64)), max_fraction=1.5)


# --------------------------------------------------------------------------- vendors


def test_a_zeiss_sem_tiff_has_its_data_zone_found(tmp_path):
    """The issue's case: 1024 x 768 with a data zone at the bottom, pixel size 0.543 nm."""
    path = tmp_path / "npg.tif"
    image = _with_bar(_specimen(), 77)
    tifffile.imwrite(path, image, extratags=[(34118, "B", 0, ZEISS_HEADER.encode(), True)])
    m = read_micrograph(path)
    assert m.pixel_size_nm == pytest.approx(0.543)
    assert m.metadata["instrument_tags"] == ["CZ_SEM"]
    assert info_bar(m) == InfoBar(bottom=77, source="detected")  # Zeiss headers do not say
    assert info_bar(m, detect=False) == InfoBar()


_FEI_HEADER = "[Scan]\r\nPixelWidth=2e-09\r\n[Image]\r\nResolutionX=1024\r\nResolutionY=700\r\n"


def test_fei_metadata_wins_over_detection(tmp_path):
    path = tmp_path / "fei.tif"
    tifffile.imwrite(
        path, _with_bar(_specimen(), 77), extratags=[(34682, "s", 0, _FEI_HEADER, True)]
    )
    assert info_bar(read_micrograph(path)) == InfoBar(bottom=68, source="fei-metadata")


def test_tescan_tag_and_sidecar(tmp_path):
    image = _with_bar(_specimen(), 60)
    header = (
        "[MAIN]\r\nDevice=MIRA3\r\nImageStripSize=60\r\nPixelSizeX=4.1e-008\r\n"
        "[SEM]\r\nHV=15000\r\n"
    )
    tagged = tmp_path / "tagged.tif"
    tifffile.imwrite(tagged, image, extratags=[(50431, "B", 0, header.encode(), True)])
    m = read_micrograph(tagged)
    assert m.metadata["instrument"]["TESCAN"]["MAIN"]["ImageStripSize"] == "60"
    json.dumps(m.metadata)
    assert info_bar(m) == InfoBar(bottom=60, source="tescan-metadata")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image)
    (tmp_path / "plain-tif.hdr").write_text(header)
    assert info_bar(read_micrograph(plain)) == InfoBar(bottom=60, source="tescan-metadata")


def test_hitachi_sidecar(tmp_path):
    image = _with_bar(_specimen(h=1024, w=1280), 64)
    path = tmp_path / "s4800.bmp"
    from PIL import Image

    Image.fromarray(image).save(path)
    sidecar = "[SemImageFile]\r\nInstructName=S-4800\r\nDataSize=1280x960\r\nPixelSize=9.92\r\n"
    (tmp_path / "s4800.txt").write_bytes(sidecar.encode("utf-16"))  # Hitachi may write UTF-16
    m = read_micrograph(path)
    assert m.metadata["instrument"]["Hitachi"]["DataSize"] == "1280x960"
    assert info_bar(m) == InfoBar(bottom=64, source="hitachi-metadata")


def test_jeol_sidecar(tmp_path):
    path = tmp_path / "jsm.tif"
    tifffile.imwrite(path, _with_bar(_specimen(h=1024, w=1280), 64))
    (tmp_path / "jsm.txt").write_text(
        "$CM_FORMAT JEOL/SEM\n$CM_INSTRUMENT JSM-7800F\n$CM_FULL_SIZE 1280 960\n"
        "$$SM_MICRON_BAR 180\n"
    )
    assert info_bar(read_micrograph(path)) == InfoBar(bottom=64, source="jeol-metadata")


def test_a_sidecar_for_another_size_or_a_link_is_ignored(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, _specimen(h=256, w=320))
    (tmp_path / "a.txt").write_text("$CM_FORMAT JEOL/SEM\n$CM_FULL_SIZE 1280 960\n")  # not 320
    assert info_bar(read_micrograph(path)) == InfoBar()
    (tmp_path / "a.txt").unlink()
    (tmp_path / "outside.txt").write_text("[SemImageFile]\r\nDataSize=320x200\r\n")
    (tmp_path / "a.txt").symlink_to(tmp_path / "outside.txt")  # never followed
    m = read_micrograph(path)
    assert "Hitachi" not in m.metadata["instrument"] and info_bar(m) == InfoBar()


def test_vendor_metadata_of_a_micrograph_built_by_hand():
    m = Micrograph(
        np.zeros((100, 80)), None, "x", 0, {"instrument": {"Hitachi": {"DataSize": "80x90"}}}
    )
    assert info_bar(m) == InfoBar(bottom=10, source="hitachi-metadata")
    m = Micrograph(
        np.zeros((100, 80)), None, "x", 0, {"instrument": {"FEI": {"Image": {"ResolutionY": 100}}}}
    )
    assert info_bar(m) == InfoBar(source="fei-metadata")  # the header says: no bar
