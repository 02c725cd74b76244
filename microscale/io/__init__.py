r"""Finding, decoding and tiling micrographs: the only package in microscale that reads images.

An archive of micrographs is a folder tree of files in many formats. This module finds the
files (:func:`discover`), tells images from everything else by their first bytes
(:func:`sniff_format`), decodes one 2-D grey image with its physical pixel size
(:func:`read_micrograph`), and prepares it for the texture descriptors (:func:`crop`,
:func:`resample`, :func:`tile`). The Prefect flow that fills the Zarr store calls these
functions; nothing here knows about Zarr or Prefect.

Its modules, each re-exported here (``microscale.io.read_micrograph`` and the rest keep
working):

- :mod:`microscale.io.decode` -- discovery, format sniffing, decoding (the formats, the
  pixel budget and streamed pages, the channel policy, pages);
- :mod:`microscale.io.metadata` -- :class:`Micrograph`, the physical pixel size from each
  vendor's metadata, the info bar;
- :mod:`microscale.io.tiling` -- :func:`crop`, :func:`resample`, :func:`tile`.
"""

from __future__ import annotations

from microscale.errors import (
    DecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedFormatError,
)
from microscale.io.decode import (
    FORMATS,
    MAX_COMPRESSION_RATIO,
    TiledPage,
    count_pages,
    discover,
    file_digest,
    open_tiled_page,
    read_micrograph,
    read_regions,
    sniff_format,
)
from microscale.io.metadata import Micrograph, detect_info_bar
from microscale.io.tiling import crop, resample, tile, tile_starts

__all__ = [
    "DecodeError",
    "FORMATS",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "MAX_COMPRESSION_RATIO",
    "Micrograph",
    "TiledPage",
    "UnsupportedFormatError",
    "count_pages",
    "crop",
    "detect_info_bar",
    "discover",
    "file_digest",
    "open_tiled_page",
    "read_micrograph",
    "read_regions",
    "resample",
    "sniff_format",
    "tile",
    "tile_starts",
]
