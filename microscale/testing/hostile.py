"""Hostile input files: decompression bombs and an XML entity bomb, small on disk.

Each announces far more than it holds, so a reader that trusts the header, decodes before
checking the size, or expands XML entities runs out of memory; microscale must refuse or
skip them from the header (see :mod:`microscale.io`).

Examples
--------
>>> data = lying_png(20000, 20000)
>>> len(data), data[12:16]
(99, b'IHDR')
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["BILLION_LAUGHS_OME_XML", "lying_png", "zlib_tiff_bomb"]

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
