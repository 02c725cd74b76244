"""Hostile input files: decompression bombs and an XML entity bomb, small on disk.

Each announces far more than it holds, so a reader that trusts the header, decodes before
checking the size, or expands XML entities runs out of memory; microscale must refuse or
skip them from the header (see :mod:`microscale.io`).

Examples
--------
>>> data = lying_png(20000, 20000)
>>> len(data), data[12:16]
(99, b'IHDR')
>>> import tempfile, tifffile
>>> with tempfile.TemporaryDirectory() as tmp:
...     shared_tile_tiff(Path(tmp) / "bomb.tif")
...     size = (Path(tmp) / "bomb.tif").stat().st_size
...     with tifffile.TiffFile(Path(tmp) / "bomb.tif") as tif:
...         page = tif.pages.first
...         shape, offsets = page.shape, set(page.dataoffsets)
>>> size, shape, len(page.dataoffsets), len(offsets)
(116882, (20480, 20480), 6400, 1)
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "BILLION_LAUGHS_OME_XML",
    "lying_png",
    "shared_tile_tiff",
    "sparse_tiff",
    "zlib_tiff_bomb",
]

_LAUGHS = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
#: OME-XML for a 32 x 32 uint8 page whose pixel size is an entity that expands to 10**9
#: "lol"s (3 GB) if a parser expands it: the "billion laughs".
BILLION_LAUGHS_OME_XML = (
    '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY lol0 "lol">' + _LAUGHS + "]>"
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
    '<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="32" SizeY="32" '
    'SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="&lol9;"><TiffData/></Pixels></Image></OME>'
)


def lying_png(width: int, height: int, size: int = 99) -> bytes:
    """A ``size``-byte PNG: a valid IHDR claiming ``width x height`` and an IDAT's start."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + struct.pack(">I", 10**8) + b"IDAT"
    return data + b"\x00" * (size - len(data))


def zlib_tiff_bomb(path: str | Path, side: int = 40960, tile_side: int = 512) -> None:
    """A tiled zlib TIFF (~1.8 MB by default) that decodes to ``side**2`` bytes of zeros.

    The default, 40960 x 40960 uint8, is 1.6 GiB decoded.
    """
    import tifffile

    compressed = zlib.compress(bytes(tile_side * tile_side), 9)
    n = (side // tile_side) ** 2
    tifffile.imwrite(
        path,
        (compressed for _ in range(n)),  # pre-compressed tiles, written as they are
        shape=(side, side),
        dtype=np.uint8,
        tile=(tile_side, tile_side),
        compression="zlib",
        photometric="minisblack",
    )


def _tiled_tiff(
    path: str | Path,
    side: int,
    tile_side: int,
    offsets: np.ndarray,
    counts: np.ndarray,
    data: bytes,
) -> None:
    """A little-endian classic TIFF: one uint8 tiled page, the tile tables given, ``data`` last."""
    n = len(offsets)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 1, 8),
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 1),  # MINISBLACK
        (277, 3, 1, 1),
        (284, 3, 1, 1),
        (322, 4, 1, tile_side),
        (323, 4, 1, tile_side),
    ]
    ifd_size = 2 + 12 * (len(entries) + 2) + 4
    table_at = 8 + ifd_size
    counts_at = table_at + 4 * n
    data_at = counts_at + 4 * n
    offsets = np.where(offsets >= 0, offsets + data_at, 0)  # relative to the data -> absolute
    entries += [(324, 4, n, table_at), (325, 4, n, counts_at)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", 8) + ifd)
        fh.write(offsets.astype("<u4").tobytes())
        fh.write(counts.astype("<u4").tobytes())
        fh.write(data)


def shared_tile_tiff(path: str | Path, side: int = 20480, tile_side: int = 256) -> None:
    """A tiled TIFF whose every tile points at the same bytes: a tile-offset bomb.

    One uncompressed ``tile_side`` x ``tile_side`` uint8 tile of noise is stored once and
    every entry of TileOffsets points at it, so the page declares ``side`` x ``side``
    pixels in a file of ~117 KB by default (20480 x 20480 in 6400 tiles). Counting stored
    bytes tile by tile finds 6400 x 64 KiB, as if genuine. With ``side=100000`` it declares
    10**10 pixels in 152,881 tiles (~1.3 MB).
    """
    n = (-(-side // tile_side)) ** 2
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, tile_side * tile_side, dtype=np.uint8).tobytes()
    _tiled_tiff(path, side, tile_side, np.zeros(n, np.int64), np.full(n, len(tile), np.int64), tile)


def sparse_tiff(path: str | Path, side: int = 100000, tile_side: int = 256) -> None:
    """A tiled TIFF that declares ``side`` x ``side`` pixels and stores no tile at all.

    Every tile is empty (offset and byte count 0, which readers fill with zeros), so no two
    tiles share bytes: only the declared size, 10**10 pixels in 152,881 tiles by default
    (1.2 MB of tile tables), says what it would cost.
    """
    n = (-(-side // tile_side)) ** 2
    _tiled_tiff(path, side, tile_side, np.full(n, -1, np.int64), np.zeros(n, np.int64), b"")
