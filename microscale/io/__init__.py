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
  vendor's metadata, the info bar (from the vendor's header, else found in the pixels);
- :mod:`microscale.io.tiling` -- :func:`crop`, :func:`resample`, :func:`tile`.
"""

from __future__ import annotations

from microscale.errors import (
    DecodeError,
    DecompressionBombError,
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
    page_shape,
    read_micrograph,
    read_regions,
    sniff_format,
)
from microscale.io.metadata import (
    InfoBar,
    Micrograph,
    detect_info_bar,
    detected_info_bar,
    info_bar,
    vendor_info_bar,
)
from microscale.io.tiling import count_tiles, crop, resample, tile, tile_starts

__all__ = [
    "DecodeError",
    "DecompressionBombError",
    "FORMATS",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "InfoBar",
    "MAX_COMPRESSION_RATIO",
    "Micrograph",
    "TiledPage",
    "UnsupportedFormatError",
    "count_pages",
    "count_tiles",
    "crop",
    "detect_info_bar",
    "detected_info_bar",
    "discover",
    "file_digest",
    "info_bar",
    "open_tiled_page",
    "page_shape",
    "read_micrograph",
    "read_regions",
    "resample",
    "sniff_format",
    "tile",
    "tile_starts",
    "vendor_info_bar",
]
