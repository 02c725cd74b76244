"""Gatan DM3/DM4 files (io/decode.py through rosettasciio)."""

from __future__ import annotations

import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from microscale.io import (
    ImageTooLargeError,
    UnsupportedFormatError,
    count_pages,
    read_micrograph,
    sniff_format,
)
from tests.io.helpers import bt601, random_array

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


def test_dm_without_rosettasciio_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.dm3"
    path.write_bytes(_dm3_bytes(random_array((4, 5), np.uint16), scale=1.0, units="nm"))
    assert sniff_format(path) == "dm"
    monkeypatch.setitem(sys.modules, "rsciio", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"a\.dm3.*pip install 'microscale\[em\]'"):
        read_micrograph(path)
    with pytest.raises(ImportError, match=r"microscale\[em\]"):
        count_pages(path)


def test_dm_reading_with_rosettasciio(tmp_path: Path) -> None:
    pytest.importorskip("rsciio")
    image = random_array((6, 9), np.uint16)
    path = tmp_path / "a.dm3"
    path.write_bytes(_dm3_bytes(image, scale=0.25, units="nm"))
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.data, image)
    assert m.pixel_size_nm == pytest.approx(0.25)
    stack = random_array((3, 4, 5), np.float32)
    path3 = tmp_path / "s.dm3"
    path3.write_bytes(_dm3_bytes(stack, scale=2.0, units="µm"))
    assert count_pages(path3) == 3
    m3 = read_micrograph(path3, page=2)
    np.testing.assert_array_equal(m3.data, stack[2])
    assert m3.pixel_size_nm == pytest.approx(2000.0)


def test_dm_frames_and_calibration_from_reader_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fake.dm4"
    path.write_bytes(struct.pack(">IQI", 4, 100, 1) + b"\x00" * 100)
    spectrum = np.arange(10.0)
    stack = random_array((2, 4, 5), np.int16)
    rgba = np.zeros((3, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    rgb = random_array((3, 4, 3), np.uint8)
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
    np.testing.assert_array_equal(m2.data, bt601(rgb))
    assert m2.pixel_size_nm is None
    with pytest.raises(ImageTooLargeError, match=r"fake\.dm4.*4x5"):
        read_micrograph(path, page=0, max_pixels=19)
    _fake_rsciio(monkeypatch, [signals[0]])
    with pytest.raises(UnsupportedFormatError, match=r"fake\.dm4.*without a 2-D image"):
        read_micrograph(path)
