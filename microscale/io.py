r"""Finding, decoding and tiling micrographs: the only module in microscale that reads images.

An archive of micrographs is a folder tree of files in many formats. This module finds the
files (:func:`discover`), tells images from everything else by their first bytes
(:func:`sniff_format`), decodes one 2-D grey image with its physical pixel size
(:func:`read_micrograph`), and prepares it for the texture descriptors (:func:`crop`,
:func:`resample`, :func:`tile`). The Prefect flow that fills the Zarr store calls these
functions; nothing here knows about Zarr or Prefect.

Formats
-------
The format is decided by magic bytes, never by the file name (:func:`sniff_format`):

========  ===================================================  ===========================
format    signature                                            decoder
========  ===================================================  ===========================
``tiff``  ``II*\0``, ``MM\0*``; BigTIFF ``II+\0``, ``MM\0+``   tifffile
``png``   ``\x89PNG\r\n\x1a\n``                                Pillow
``jpeg``  ``\xff\xd8\xff``                                     Pillow
``bmp``   ``BM`` and a known DIB header size at byte 14        Pillow
``dm``    big-endian version 3 or 4, a byte-order flag 0 or 1  rosettasciio (extra ``em``)
========  ===================================================  ===========================

Anything else (text, an empty file, ``.DS_Store``...) is not an image:
:func:`read_micrograph` raises :class:`UnsupportedFormatError`. Anything but a regular file
is refused the same way: FIFOs, sockets and device files are never opened. A file that has
an image signature but cannot be decoded (truncated, corrupt, an unsupported compression)
raises :class:`DecodeError` with the decoder's own reason; a partial or zero-filled image is
never returned (Pillow's ``LOAD_TRUNCATED_IMAGES`` is never set, and PNG chunk checksums are
verified). The pixel count is read from the header and checked against ``max_pixels``
*before* any pixel data is decoded (:class:`ImageTooLargeError`).

Pixel budget and streamed pages
-------------------------------
``max_pixels`` bounds how many pixels are decoded *at once*. :func:`read_micrograph`
returns a whole page, so it refuses any page above the budget. A **tiled** TIFF page above
it is not necessarily a decompression bomb, and can be read region by region
(:func:`open_tiled_page`, :func:`read_regions`), never decoding more than the requested
region plus the TIFF tiles that straddle its border. Bomb or genuine is decided by the
bytes the file actually stores for the page (each tile's byte count clipped to the file's
size): a page is *streamable* when it is tiled, each TIFF tile holds at most
``max_pixels`` pixels, and its stored bytes are at least ``1 / MAX_COMPRESSION_RATIO``
(1/100) of its decoded bytes. Lossless compression of real micrographs (zlib, LZW, zstd on
noisy data) rarely exceeds 10x, whereas a bomb is a few bytes per megabyte (a 1.8 MB zlib
TIFF announcing a 40960 x 40960 page of zeros is ~900x). A streamable page still makes
:func:`read_micrograph` raise :class:`ImageTooLargeError`, with ``streamable = True`` and a
message pointing to :func:`open_tiled_page`; a bomb (and any stripped, PNG, JPEG, BMP or DM
image) is refused as before. Strip-based TIFFs are never streamed.

Channel policy
--------------
Every micrograph comes out as one 2-D ``(H, W)`` grey array (METHOD.md section 1):

- grey data is returned as stored, in its native dtype (``uint8``, ``uint16`` for 12- and
  16-bit data, ``int16``, ``float32``..., ``bool`` for bilevel images), so that
  intensity normalisation can use the dtype's range;
- RGB and RGBA (TIFF photometric RGB or YCbCr, Pillow modes RGB/RGBA/RGBX) become luminance
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601); alpha and any further extra samples
  are dropped. Integer data are rounded back to the stored dtype (as Pillow's
  ``convert("L")`` does), float data keep their dtype. 16-bit RGB(A) and grey + alpha
  PNGs are decoded with imagecodecs when it is installed (Pillow reduces them to 8 bits);
- palette images (TIFF photometric PALETTE, PNG/BMP mode P) are converted to RGB through
  their palette, then to luminance. A TIFF colour map is 16-bit; when every entry is a
  multiple of 257 it is an 8-bit map and the result is ``uint8``, otherwise ``uint16``;
- grey + alpha (Pillow LA) keeps the grey channel;
- other colour modes (CMYK, YCbCr JPEG, LAB...) decoded by Pillow are converted to RGB by
  Pillow, then to luminance;
- any other channel axis (an OME or ImageJ ``C`` axis, several MINISBLACK samples per
  pixel, a TIFF in CMYK or another photometric interpretation) keeps channel 0 only.
  Colour is recognised from the file's own declaration, not by counting channels;
- TIFF photometric MINISWHITE (0 is white) is inverted within the dtype's range (``~x`` for
  bool, ``2**bits - 1 - x`` for unsigned data, ``-1 - x`` for signed integers, ``-x`` for
  floats), so that larger values are brighter in every format, as Pillow displays them.

Pages
-----
A file holds ``count_pages(path)`` 2-D images, numbered from 0 and selected with
``read_micrograph(path, page=...)``. For TIFF these are the frames of every image series
in file order (tifffile's series, with reduced-resolution thumbnail pages skipped): each
series contributes the product of its non-spatial axes (``T``, ``Z``, ``I``, ``Q``...),
excluding the channel axis ``C`` (channel 0 is read). A DM file contributes the frames of
every 2-D image it holds. PNG, JPEG and BMP files have one page.

Physical pixel size
-------------------
``Micrograph.pixel_size_nm`` is the spacing of the columns (x) in nanometres, or ``None``
when the file does not say. Sources, in order of precedence (the first one found wins, and
``metadata["pixel_size_source"]`` names it):

1. OME-XML: ``Pixels/@PhysicalSizeX`` in ``PhysicalSizeXUnit`` (µm when absent, as the
   OME schema says), for the image of the selected page's series. An OME-XML text that
   declares a DOCTYPE or ENTITY (the vehicle of "billion laughs" entity-expansion bombs,
   never needed by OME) is not parsed at all: the file is read as a plain TIFF;
2. FEI / Thermo Fisher SEM and FIB (TIFF tag 34680 FEI_SFEG or 34682 FEI_HELIOS, an
   INI-style text): ``[Scan] PixelWidth`` (else ``[EScan] PixelWidth``), in metres;
3. Zeiss SEM (TIFF tag 34118 CZ_SEM): ``AP_IMAGE_PIXEL_SIZE`` (else ``AP_PIXEL_SIZE``),
   with the unit written after the number;
4. ImageJ: the ``unit`` of the ImageJ description and ``1 / XResolution`` pixels;
5. the TIFF ``XResolution`` tag with ``ResolutionUnit`` inch or centimetre (and
   tifffile's millimetre and micrometre extensions). A missing ``ResolutionUnit`` or
   ``NONE`` means uncalibrated; so does a resolution whose pixel is 10 µm or larger
   (at most 2540 pixels per inch), which is a print or screen setting (72, 96, 300 dpi)
   written by image software, not a microscope calibration;
6. DM files: the calibration (scale and unit) of the x axis, as rosettasciio reports it.

Units are normalised to nm (m, cm, mm, µm/um/micron, nm, Å/angstrom, pm, inch). Unknown
units, ``pixel`` and non-positive values give ``None``. Non-square pixels are not
corrected: ``pixel_size_nm`` is the x spacing.

Metadata
--------
``Micrograph.metadata`` is a JSON-serialisable dict: ``format``, ``dtype`` (the stored
sample dtype), ``shape`` and ``axes`` (of the stored series or image, channels included),
``channel_policy`` (what was done, in words), ``bit_depth`` (bits per sample when the file
says, else ``None``), ``n_pages``, ``pixel_size_source``, ``instrument_tags`` (names of the
private TIFF tags found, e.g. ``FEI_HELIOS``, ``CZ_SEM``), and ``instrument`` (the parsed
FEI and Zeiss headers, keyed ``"FEI"`` and ``"CZ_SEM"``, when present).

Tiling
------
:func:`tile` cuts an image into square tiles on a regular grid with step ``stride`` (by
default ``tile_size``: no overlap). When the grid does not end exactly at the image edge,
one more row (column) of tiles is added, shifted to end flush with the edge, so every pixel
is covered: that tile overlaps its neighbour rather than being dropped. An image side
shorter than ``tile_size`` but at least ``min_fraction * tile_size`` is reflect-padded at the
bottom / right up to ``tile_size`` (``np.pad(mode="reflect")``: mirrored about the edge pixel,
which is not repeated, so no seam or stripe is added; a side of one pixel is repeated);
a shorter side raises
:class:`ImageTooSmallError`. Padding never moves the origin: the real pixels of a tile are
``np.minimum(origins + tile_size, image.shape) - origins`` rows and columns from its origin.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import stat
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from microscale._validation import check_int
from microscale.errors import (
    DecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    PageNotFoundError,
    UnsupportedFormatError,
)
from microscale.intensity import as_image_stack

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

_log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("tiff", "png", "jpeg", "bmp", "dm")

#: ITU-R BT.601 luma weights for R, G, B.
BT601 = (0.299, 0.587, 0.114)

_EM_HINT = "pip install 'microscale[em]'"


#: A tiled TIFF page above ``max_pixels`` is streamed (not refused) only when the file
#: stores at least 1/MAX_COMPRESSION_RATIO of its decoded bytes; see the module docstring.
MAX_COMPRESSION_RATIO = 100


# --------------------------------------------------------------------------- validation


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"The '{name}' parameter must be a real number. Got {value!r} instead.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"The '{name}' parameter must be a finite number > 0. Got {value!r} instead."
        )
    return value


def _check_2d(image: ArrayLike, what: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(
            f"The {what} must be a 2-D (H, W) grey array; got an array of shape {arr.shape}. "
            "Read files with read_micrograph, which converts colour to luminance."
        )
    return arr


# --------------------------------------------------------------------------- discovery


def discover(
    root: str | os.PathLike[str],
    *,
    follow_symlinks: bool = False,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """List every regular file under ``root``, recursively, in a deterministic order.

    Parameters
    ----------
    root : str or path-like
        The archive folder.
    follow_symlinks : bool, optional
        Follow symbolic links to files and folders. Even then a link whose target lies
        outside ``root`` (after resolving every link) is skipped, as is a link back to a
        folder being walked (a loop), and a file reachable by several paths is listed once,
        under the first path in sorted order. By default links are not followed at all.
    skipped : list, optional
        If given, every entry left out is appended to it as ``(path, reason)``, in sorted
        order: links (not followed, dangling, looping, or leading outside ``root``) and
        FIFOs, sockets and device files, which are never opened (so a FIFO cannot hang the
        walk).

    Returns
    -------
    paths : list of Path
        Absolute paths under the resolved ``root``, sorted by their components relative to
        it. Only regular files: no folders, links (unless followed), sockets, FIFOs or
        devices. Hidden files such as ``.DS_Store`` are listed; :func:`sniff_format` tells
        them apart from images. A hard link is a regular file and is listed wherever its
        other names are: its content is the same file as the one inside ``root``, so
        reading it reads nothing else.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    NotADirectoryError
        If ``root`` is not a folder.
    PermissionError
        If a folder under ``root`` cannot be listed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "b.tif").write_bytes(b"")
    ...     (Path(tmp) / "a").mkdir()
    ...     _ = (Path(tmp) / "a" / "c.png").write_bytes(b"")
    ...     [p.relative_to(Path(tmp).resolve()).as_posix() for p in discover(tmp)]
    ['a/c.png', 'b.tif']
    """
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(
            f"The archive folder {os.fspath(root_path)!r} does not exist. Check the path."
        )
    if not root_path.is_dir():
        raise NotADirectoryError(
            f"The archive root {os.fspath(root_path)!r} is a file, not a folder. Pass the "
            "folder that contains the micrographs."
        )
    top = root_path.resolve(strict=True)
    top_stat = top.stat()
    found: list[tuple[tuple[str, ...], Path]] = []
    left_out: list[tuple[tuple[str, ...], str]] = []
    # each item: (parts relative to top, real folder path, inodes of real ancestors)
    stack: list[tuple[tuple[str, ...], Path, frozenset[tuple[int, int]]]] = [
        ((), top, frozenset({(top_stat.st_dev, top_stat.st_ino)}))
    ]
    while stack:
        rel, real_dir, ancestors = stack.pop()
        with os.scandir(real_dir) as entries:
            for entry in entries:
                parts = (*rel, entry.name)
                if entry.is_symlink():
                    if not follow_symlinks:
                        left_out.append((parts, "a symbolic link (links are not followed)"))
                        continue
                    try:
                        target = Path(entry.path).resolve(strict=True)
                        target_stat = target.stat()
                    except (OSError, RuntimeError):  # dangling link or a loop of links
                        left_out.append((parts, "a dangling symbolic link or a loop of links"))
                        continue
                    if not target.is_relative_to(top):
                        left_out.append((parts, "a symbolic link to outside the archive root"))
                        continue
                    if stat.S_ISDIR(target_stat.st_mode):
                        key = (target_stat.st_dev, target_stat.st_ino)
                        if key not in ancestors:
                            stack.append((parts, target, ancestors | {key}))
                        else:
                            left_out.append((parts, "a link back to a folder above it (a loop)"))
                    elif stat.S_ISREG(target_stat.st_mode):
                        found.append((parts, target))
                    else:
                        left_out.append((parts, "a link to a FIFO, socket or device file"))
                elif entry.is_dir(follow_symlinks=False):
                    sub = Path(entry.path)
                    st = entry.stat(follow_symlinks=False)
                    key = (st.st_dev, st.st_ino)
                    if key not in ancestors:
                        stack.append((parts, sub, ancestors | {key}))
                elif entry.is_file(follow_symlinks=False):
                    found.append((parts, Path(entry.path)))
                else:
                    left_out.append((parts, "not a regular file (a FIFO, socket or device file)"))
    found.sort(key=lambda item: item[0])
    if skipped is not None:
        skipped.extend((top.joinpath(*parts), reason) for parts, reason in sorted(left_out))
    seen: set[Path] = set()
    paths: list[Path] = []
    for parts, real in found:
        if not real.is_relative_to(top):  # pragma: no cover - guarded above
            continue
        if real in seen:
            continue
        seen.add(real)
        paths.append(top.joinpath(*parts))
    return paths


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks, as 64 hex digits.

    Parameters
    ----------
    path : str or path-like
        Any file.

    Returns
    -------
    digest : str
        Lower-case hexadecimal SHA-256, as ``sha256sum`` prints it.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "x"
    ...     _ = p.write_bytes(b"abc")
    ...     file_digest(p)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------- sniffing

_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The image format of a file from its first bytes, or ``None`` if it is not an image.

    Parameters
    ----------
    path : str or path-like
        A file. Its name and extension are ignored.

    Returns
    -------
    format : {"tiff", "png", "jpeg", "bmp", "dm"} or None
        ``None`` for anything else: an empty file, text, ``.DS_Store``, unknown binaries.

    Raises
    ------
    OSError
        If the file cannot be opened (missing, a folder, no permission).

    Notes
    -----
    Only regular files are opened (checked with ``os.stat`` before opening, and again on
    the open descriptor, which is opened non-blocking): a FIFO, socket or device file is
    ``None``, so a FIFO can never hang the caller.

    Signatures: TIFF ``II*\\0`` / ``MM\\0*`` and BigTIFF ``II+\\0`` / ``MM\\0+``; PNG's
    8-byte signature; JPEG ``FF D8 FF``; BMP ``BM`` followed by a known DIB header size at
    byte 14; Gatan DM3 (DM4): a big-endian version 3 (4), the file size in 4 (8) bytes and a
    big-endian byte-order flag 0 or 1.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the check
            return None
        head = fh.read(20)
    return _sniff_bytes(head)


def _sniff_bytes(head: bytes) -> str | None:
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:2] == b"BM" and len(head) >= 18:
        (dib_size,) = struct.unpack("<I", head[14:18])
        if dib_size in _DIB_HEADER_SIZES:
            return "bmp"
    if len(head) >= 16:
        (version,) = struct.unpack(">I", head[:4])
        if version == 3 and struct.unpack(">I", head[8:12])[0] in (0, 1):
            return "dm"
        if version == 4 and struct.unpack(">I", head[12:16])[0] in (0, 1):
            return "dm"
    return None


def _not_an_image(path: Path) -> UnsupportedFormatError:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        return UnsupportedFormatError(
            f"{os.fspath(path)!r} is not a regular file (a FIFO, socket or device file), so "
            "it is never opened. Leave it out of the archive."
        )
    size = info.st_size
    if size == 0:
        return UnsupportedFormatError(
            f"{os.fspath(path)!r} is empty (0 bytes), so it holds no image. Remove it from "
            "the archive or replace it with a complete copy."
        )
    with open(path, "rb") as fh:
        head = fh.read(8)
    return UnsupportedFormatError(
        f"{os.fspath(path)!r} is not an image that microscale can read: its first bytes "
        f"{head!r} match none of TIFF, PNG, JPEG, BMP or Gatan DM3/DM4 (the file name is not "
        "used). Leave it out of the archive, or convert it to TIFF."
    )


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, eq=False)
class Micrograph:
    """One decoded 2-D grey micrograph and what the file says about it.

    Attributes
    ----------
    data : (H, W) ndarray
        The image in its native dtype (see the module docstring's channel policy).
    pixel_size_nm : float or None
        Physical size of a pixel along x, in nanometres; ``None`` when the file does not
        say.
    source : str
        The path the image was read from, as given.
    page : int
        Which page (frame) of the file this is, from 0.
    metadata : dict
        JSON-serialisable description: format, stored dtype and shape, channel policy,
        bit depth, number of pages, pixel-size source, instrument tags.

    Notes
    -----
    Equality is identity (``eq=False``): comparing pixel arrays is left to the caller.
    """

    data: np.ndarray
    pixel_size_nm: float | None
    source: str
    page: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of :attr:`data`."""
        return self.data.shape  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers

_UNITS_NM: dict[str, float] = {
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "µm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "å": 0.1,
    "angstrom": 0.1,
    "ångström": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "in": 2.54e7,
    "inch": 2.54e7,
}


def _unit_to_nm(unit: object) -> float | None:
    """Nanometres per ``unit`` (a length unit name in any common spelling), or None."""
    if not isinstance(unit, str):
        return None
    u = unit.strip().lower()
    u = u.replace("\\u00b5", "µ").replace("\\u03bc", "µ").replace("μ", "µ")  # micro signs
    u = u.replace("\u212b", "å")  # the angstrom sign
    if u in _UNITS_NM:
        return _UNITS_NM[u]
    if len(u) > 3 and u.endswith("s"):  # plurals: microns, meters, inches (not "ms")
        for stem in (u[:-1], u[:-2]):
            if stem in _UNITS_NM:
                return _UNITS_NM[stem]
    return None


def _positive(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _length_nm(value: object, unit: object) -> float | None:
    """``value`` in ``unit`` converted to nm; None if either is unusable."""
    scale = _unit_to_nm(unit)
    if scale is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return _positive(number * scale)


def _pixel_size_ome(ome_xml: str, image_index: int = 0) -> float | None:
    """PhysicalSizeX (nm) of the ``image_index``-th OME Image, or None.

    The unit defaults to µm, as in the OME schema.
    """
    if _has_dtd(ome_xml):  # never expand entities (billion laughs)
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if not pixels:
        return None
    el = pixels[image_index] if image_index < len(pixels) else pixels[0]
    size = el.get("PhysicalSizeX")
    if size is None:
        return None
    return _length_nm(size, el.get("PhysicalSizeXUnit", "µm"))


def _pixel_size_fei(fei: Mapping[str, Any] | None) -> float | None:
    """``[Scan] PixelWidth`` (else ``[EScan]``) of tifffile's ``fei_metadata``, in nm."""
    if not fei:
        return None
    for section in ("Scan", "EScan"):
        values = fei.get(section)
        if isinstance(values, Mapping) and "PixelWidth" in values:
            size = _length_nm(values["PixelWidth"], "m")
            if size is not None:
                return size
    return None


def _pixel_size_zeiss(sem: Mapping[str, Any] | None) -> float | None:
    """``AP_IMAGE_PIXEL_SIZE`` (else ``AP_PIXEL_SIZE``) of tifffile's ``sem_metadata``, in nm.

    tifffile gives ``('Image Pixel Size', 2.233, 'nm')`` when it could split number and
    unit, else ``('Image Pixel Size', '2.233 nm')``.
    """
    if not sem:
        return None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = sem.get(key)
        if not isinstance(entry, tuple | list) or len(entry) < 2:
            continue
        if len(entry) >= 3:
            size = _length_nm(entry[1], entry[2])
        else:
            words = str(entry[1]).split()
            size = _length_nm(words[0], words[1]) if len(words) == 2 else None
        if size is not None:
            return size
    return None


def _pixel_size_imagej(unit: object, x_resolution: float | None) -> float | None:
    """ImageJ: ``1 / XResolution`` pixels in ``unit``, in nm."""
    if not x_resolution or _unit_to_nm(unit) is None:
        return None
    return _length_nm(1.0 / x_resolution, unit)


#: TIFF ResolutionUnit codes (4 and 5 are tifffile extensions) -> nm per unit.
_RESOLUTION_UNIT_NM = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}
#: Resolution-tag pixels at least this large (nm) are print/screen settings, not calibrations.
_MAX_CALIBRATED_PIXEL_NM = 10_000.0


def _pixel_size_resolution(x_resolution: float | None, unit_code: int | None) -> float | None:
    """TIFF ``XResolution`` (pixels per unit) with ``ResolutionUnit``, in nm.

    None without a unit, with unit NONE (1), or when the pixel would be 10 µm or larger
    (72, 96 or 300 dpi and the like are defaults of image software, not calibrations).
    """
    if unit_code is None or unit_code not in _RESOLUTION_UNIT_NM or not x_resolution:
        return None
    size = _positive(_RESOLUTION_UNIT_NM[unit_code] / x_resolution)
    if size is None or size >= _MAX_CALIBRATED_PIXEL_NM:
        return None
    return size


def _pixel_size_dm(axes: list[Mapping[str, Any]], x_dim: int) -> float | None:
    """Scale of the array dimension ``x_dim`` in rosettasciio's axes list, in nm."""
    for ax in axes:
        if ax.get("index_in_array", None) == x_dim:
            return _length_nm(ax.get("scale"), ax.get("units"))
    if 0 <= x_dim < len(axes):
        return _length_nm(axes[x_dim].get("scale"), axes[x_dim].get("units"))
    return None


def _jsonable(obj: Any) -> Any:
    """A copy of ``obj`` made of dict / list / str / int / float / bool / None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an (H, W, >=3) array, in the input's dtype (integers rounded)."""
    y = BT601[0] * rgb[..., 0].astype(np.float64)
    y += BT601[1] * rgb[..., 1]
    y += BT601[2] * rgb[..., 2]
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        np.rint(y, out=y)
        np.clip(y, info.min, info.max, out=y)
    return y.astype(rgb.dtype)


def _native(data: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order."""
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return np.ascontiguousarray(data)


def _invert(data: np.ndarray, bits: int | None) -> np.ndarray:
    """Reflect values within the dtype's range (for TIFF MINISWHITE)."""
    if data.dtype == np.bool_:
        return ~data
    if np.issubdtype(data.dtype, np.unsignedinteger):
        top = np.iinfo(data.dtype).max if not bits else (1 << bits) - 1
        return (top - data).astype(data.dtype)
    if np.issubdtype(data.dtype, np.signedinteger):
        return ~data
    return -data


def _check_pixels(path: Path, height: int, width: int, max_pixels: int, itemsize: int) -> None:
    n = int(height) * int(width)
    if n > max_pixels:
        raise ImageTooLargeError(
            f"{os.fspath(path)!r} holds a {height}x{width} image ({n:,} pixels), more than "
            f"max_pixels={max_pixels:,}. If the machine has the memory (about "
            f"{n * max(itemsize, 1) / 2**30:.1f} GiB for the pixels), pass a larger "
            "max_pixels to read_micrograph; otherwise leave the file out."
        )


def _decode_error(path: Path, fmt: str, exc: BaseException) -> DecodeError:
    kind = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__.split('.')[0]}.{kind}"
    reason = str(exc) or "no reason given"
    return DecodeError(
        f"{os.fspath(path)!r} has a {fmt.upper()} signature but could not be decoded: "
        f"{reason} ({kind}). The file is truncated, corrupt or uses an "
        "unsupported encoding; replace it with an intact copy or convert it to TIFF."
    )


def _page_error(path: Path, page: int, n_pages: int) -> ValueError:
    return PageNotFoundError(
        f"Page {page} was requested from {os.fspath(path)!r}, which has {n_pages} page(s) "
        f"(0 to {n_pages - 1}). Use count_pages(path) to enumerate them."
    )


#: Exceptions that decoders raise on damaged or unsupported data (MemoryError excluded);
#: imagecodecs' errors (behind tifffile's compressed TIFFs) are RuntimeErrors.
_DECODER_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    SyntaxError,
    EOFError,
    KeyError,
    IndexError,
    NotImplementedError,
    struct.error,
    zlib.error,
)


# --------------------------------------------------------------------------- reading


def read_micrograph(
    path: str | os.PathLike[str], *, page: int = 0, max_pixels: int = 2**28
) -> Micrograph:
    """Decode one page of an image file as a 2-D grey micrograph.

    Parameters
    ----------
    path : str or path-like
        A TIFF (incl. BigTIFF, OME-TIFF, ImageJ), PNG, JPEG, BMP or Gatan DM3/DM4 file.
        The format is sniffed from the bytes; the extension is ignored.
    page : int, optional
        Which page (frame) to read, from 0; see :func:`count_pages` and the module
        docstring.
    max_pixels : int, optional
        Largest ``H * W`` accepted, checked from the header before decoding. The default,
        ``2**28`` (16384 x 16384), keeps one uint16 page under 512 MiB.

    Returns
    -------
    micrograph : Micrograph
        ``data`` is ``(H, W)`` in the stored dtype (colour converted by the channel policy
        of the module docstring); ``pixel_size_nm`` from the first metadata source found.

    Raises
    ------
    UnsupportedFormatError
        If the file is not an image of a supported format (empty, text, unknown bytes).
    DecodeError
        If the file has an image signature but is truncated or corrupt; the message
        carries the decoder's reason.
    ImageTooLargeError
        If the header announces more than ``max_pixels`` pixels.
    ImportError
        For a DM file when the optional ``em`` extra (rosettasciio) is not installed.
    ValueError
        If ``page`` or ``max_pixels`` is invalid or ``page`` is out of range.
    OSError
        If the file cannot be opened.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "a.tif"
    ...     tifffile.imwrite(p, np.arange(12, dtype=np.uint16).reshape(3, 4),
    ...                      resolution=(2e6, 2e6), resolutionunit="CENTIMETER")
    ...     m = read_micrograph(p)
    >>> m.data.dtype, m.data.shape, m.pixel_size_nm
    (dtype('uint16'), (3, 4), 5.0)
    """
    page = check_int(page, "page", minimum=0)
    max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is None:
        raise _not_an_image(path)
    if fmt == "tiff":
        return _read_tiff(path, page, max_pixels)
    if fmt == "dm":
        return _read_dm(path, page, max_pixels)
    return _read_pillow(path, fmt, page, max_pixels)


def count_pages(path: str | os.PathLike[str]) -> int:
    """Number of 2-D pages (frames) that :func:`read_micrograph` can read from a file.

    Parameters
    ----------
    path : str or path-like
        An image file.

    Returns
    -------
    n : int
        At least 1. See the module docstring for what a page is.

    Raises
    ------
    UnsupportedFormatError, DecodeError, ImportError
        As :func:`read_micrograph`.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is None:
        raise _not_an_image(path)
    if fmt == "tiff":
        try:
            with _open_tiff(path) as tif:
                return len(_tiff_frames(path, tif))
        except (UnsupportedFormatError, DecodeError):
            raise
        except _DECODER_ERRORS as exc:
            raise _decode_error(path, fmt, exc) from exc
    if fmt == "dm":
        signals = _dm_signals(path, lazy=True)
        return len(_dm_frames(path, signals))
    return 1


# TIFF ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TiffFrame:
    series: int
    page_index: int  # index into series.pages


def _tiff_frames(path: Path, tif: Any) -> list[_TiffFrame]:
    """The 2-D frames of every non-thumbnail series, channel axis fixed at 0."""
    frames: list[_TiffFrame] = []
    for si, series in enumerate(tif.series):
        keyframe = series.keyframe
        if keyframe is None or getattr(keyframe, "is_reduced", False):
            continue
        page_axes = keyframe.axes
        if not series.axes.endswith(page_axes):
            raise UnsupportedFormatError(
                f"{os.fspath(path)!r}: series {si} has axes {series.axes!r} that do not end "
                f"with its pages' axes {page_axes!r}; microscale cannot map it to 2-D "
                "pages. Convert the file to plain (multi-page) TIFF."
            )
        extra = set(page_axes) - {"Y", "X", "S"}
        if extra:
            raise UnsupportedFormatError(
                f"{os.fspath(path)!r}: the pages of series {si} are not 2-D (axes "
                f"{page_axes!r}, e.g. volumetric TIFF); convert them to one 2-D page each."
            )
        lead_axes = series.axes[: len(series.axes) - len(page_axes)]
        lead_shape = tuple(series.shape[: len(lead_axes)])
        n_series_pages = len(series.pages)
        if math.prod(lead_shape) != n_series_pages:
            raise UnsupportedFormatError(
                f"{os.fspath(path)!r}: series {si} has shape {series.shape} (axes "
                f"{series.axes!r}) but {n_series_pages} pages; convert the file to plain "
                "multi-page TIFF."
            )
        counts = [1 if ax == "C" else n for ax, n in zip(lead_axes, lead_shape, strict=True)]
        for index in np.ndindex(*counts):
            flat = int(np.ravel_multi_index(index, lead_shape)) if lead_shape else 0
            frames.append(_TiffFrame(si, flat))
    if not frames:
        raise DecodeError(
            f"{os.fspath(path)!r} has a TIFF header but no readable image page (the file is "
            "truncated or was not finished). Replace it with an intact copy."
        )
    return frames


def _tiff_channel_policy(page: Any, samples: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
    """Apply the channel policy to one page's (H, W[, S]) data -> (2-D data, policy, stored)."""
    photometric = int(page.photometric)
    n_samples = samples.shape[-1] if samples.ndim == 3 else 1
    if photometric == 3 and samples.ndim == 2:  # PALETTE
        cmap = np.asarray(page.colormap)
        if cmap.dtype == np.uint16 and np.all(cmap % 257 == 0):
            cmap = (cmap // 257).astype(np.uint8)
        rgb = np.moveaxis(cmap[:, samples], 0, -1)
        return _luminance(rgb), "palette -> RGB -> luminance (BT.601)", rgb
    if photometric in (2, 6) and n_samples >= 3:  # RGB, YCbCr (decoded to RGB)
        dropped = ", alpha dropped" if n_samples == 4 else ""
        if n_samples > 4:
            dropped = f", {n_samples - 3} extra samples dropped"
        return _luminance(samples), f"RGB -> luminance (BT.601){dropped}", samples
    if samples.ndim == 3:
        return samples[..., 0], f"channel 0 of {n_samples} samples per pixel", samples
    if photometric == 0:  # MINISWHITE
        return _invert(samples, int(page.bitspersample)), "grey (MINISWHITE inverted)", samples
    return samples, "grey", samples


def _has_dtd(xml: object) -> bool:
    """Whether an XML text declares a DOCTYPE or ENTITY (entity-expansion bombs need one)."""
    return isinstance(xml, str) and ("<!DOCTYPE" in xml or "<!ENTITY" in xml)


def _open_tiff(path: Path) -> Any:
    """A ``tifffile.TiffFile``; an OME-XML description with a DTD is never parsed.

    OME-XML has no use for DOCTYPE or ENTITY declarations, and they are how an XML
    "billion laughs" bomb expands. Such a file is opened as a plain TIFF instead
    (``is_ome=False``): its pixels are read, its OME metadata ignored.
    """
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        if tif.is_ome and _has_dtd(tif.pages.first.description):
            _log.warning(
                "%r: the OME-XML description declares a DOCTYPE/ENTITY (an XML bomb?); it is "
                "not parsed and the file is read as a plain TIFF",
                os.fspath(path),
            )
            tif.close()
            tif = tifffile.TiffFile(path, is_ome=False)
    except BaseException:
        tif.close()
        raise
    return tif


def _read_tiff(path: Path, page: int, max_pixels: int) -> Micrograph:
    try:
        with _open_tiff(path) as tif:
            frames = _tiff_frames(path, tif)
            if page >= len(frames):
                raise _page_error(path, page, len(frames))
            frame = frames[page]
            series = tif.series[frame.series]
            tiff_page = series.pages[frame.page_index]
            if tiff_page is None:
                raise DecodeError(
                    f"{os.fspath(path)!r}: page {page} is missing from the file (an OME "
                    "plane without data). Replace the file with a complete copy."
                )
            keyframe = series.keyframe
            axes = keyframe.axes
            shape = keyframe.shape
            height, width = shape[axes.index("Y")], shape[axes.index("X")]
            if height * width > max_pixels and _tiff_streamable(
                path, tiff_page, keyframe, max_pixels
            ):
                exc = ImageTooLargeError(
                    f"{os.fspath(path)!r} holds a {height}x{width} image "
                    f"({height * width:,} pixels), more than max_pixels={max_pixels:,} to "
                    "decode at once; it is a tiled TIFF whose stored data make it genuine "
                    "(not a decompression bomb), so read it region by region with "
                    "open_tiled_page() or read_regions(), or pass a larger max_pixels."
                )
                exc.streamable = True
                raise exc
            _check_pixels(path, height, width, max_pixels, keyframe.dtype.itemsize)

            raw = tiff_page.asarray()
            if raw.shape != tuple(shape):
                raw = raw.reshape(shape)
            if "S" in axes:
                raw = np.moveaxis(raw, axes.index("S"), -1)
            data, policy, _ = _tiff_channel_policy(keyframe, raw)
            pixel_size, metadata = _tiff_metadata(tif, frames, frame, policy)
    except (UnsupportedFormatError, DecodeError, ImageTooLargeError, PageNotFoundError):
        raise
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, "tiff", exc) from exc
    return Micrograph(_native(data), pixel_size, os.fspath(path), page, metadata)


def _tiff_metadata(
    tif: Any, frames: list[_TiffFrame], frame: _TiffFrame, policy: str
) -> tuple[float | None, dict[str, Any]]:
    """Pixel size and the metadata dict of one TIFF frame (``policy``: its channel policy)."""
    series = tif.series[frame.series]
    keyframe = series.keyframe
    if "C" in series.axes:
        n_channels = series.shape[series.axes.index("C")]
        if n_channels > 1:
            policy = f"{policy}; channel 0 of {n_channels} (C axis)"

    first = tif.pages.first
    ij = tif.imagej_metadata if tif.is_imagej else None
    fei = tif.fei_metadata if tif.is_fei else None
    sem = tif.sem_metadata if tif.is_sem else None
    # tifffile keeps the raw value of a header it could not parse: ignore those
    fei = fei if isinstance(fei, Mapping) else None
    sem = sem if isinstance(sem, Mapping) else None
    ome = tif.ome_metadata if tif.is_ome else None
    x_res = _tiff_resolution(keyframe)
    unit_tag = keyframe.tags.get("ResolutionUnit")
    unit_code = int(unit_tag.value) if unit_tag is not None else None
    instrument_tags = sorted({tag.name for tag in first.tags.values() if tag.code >= 32768})
    bits = int(keyframe.bitspersample)
    meta_series_axes = series.axes
    meta_series_shape = list(series.shape)
    stored_dtype = str(keyframe.dtype)
    is_ome = tif.is_ome
    is_imagej = tif.is_imagej

    candidates = [
        ("OME-XML PhysicalSizeX", _pixel_size_ome(ome, frame.series) if ome else None),
        ("FEI [Scan] PixelWidth", _pixel_size_fei(fei)),
        ("Zeiss AP_IMAGE_PIXEL_SIZE", _pixel_size_zeiss(sem)),
        ("ImageJ unit and XResolution", _pixel_size_imagej((ij or {}).get("unit"), x_res)),
        ("TIFF XResolution and ResolutionUnit", _pixel_size_resolution(x_res, unit_code)),
    ]
    pixel_size, source = next(((v, k) for k, v in candidates if v is not None), (None, None))

    instrument: dict[str, Any] = {}
    if fei:
        instrument["FEI"] = _jsonable(fei)
    if sem:
        instrument["CZ_SEM"] = _jsonable({k: v for k, v in sem.items() if k})
    metadata = {
        "format": "tiff",
        "dtype": stored_dtype,
        "shape": meta_series_shape,
        "axes": meta_series_axes,
        "channel_policy": policy,
        "bit_depth": bits,
        "n_pages": len(frames),
        "pixel_size_source": source,
        "instrument_tags": instrument_tags,
        "instrument": instrument,
        "ome": is_ome,
        "imagej": is_imagej,
    }
    return pixel_size, metadata


def _tiff_streamable(path: Path, tiff_page: Any, keyframe: Any, max_pixels: int) -> bool:
    """Whether a TIFF page above ``max_pixels`` is a genuine tiled page that can be streamed.

    Tiled, each TIFF tile within ``max_pixels``, and stored bytes (byte counts clipped to
    the file's size) at least ``1 / MAX_COMPRESSION_RATIO`` of the decoded bytes.
    """
    if not getattr(keyframe, "is_tiled", False):
        return False
    if int(keyframe.tilelength) * int(keyframe.tilewidth) > max_pixels:
        return False
    size = os.stat(path).st_size
    stored = 0
    for offset, count in zip(tiff_page.dataoffsets, tiff_page.databytecounts, strict=True):
        stored += max(0, min(int(offset) + int(count), size) - int(offset))
    decoded = math.prod(keyframe.shape) * keyframe.dtype.itemsize
    return stored * MAX_COMPRESSION_RATIO >= decoded


class TiledPage:
    """One genuine tiled TIFF page, read region by region (see :func:`open_tiled_page`).

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the 2-D grey page.
    dtype : numpy dtype
        dtype of the regions :meth:`read` returns (after the channel policy).
    pixel_size_nm, source, page, metadata
        As :class:`Micrograph`; ``metadata["streamed"]`` is True.
    max_pixels : int
        The budget: :meth:`read` refuses a region larger than this.
    """

    def __init__(self, tif: Any, tiff_page: Any, keyframe: Any, **fields: Any) -> None:
        import zarr

        self._tif = tif
        self._keyframe = keyframe
        self._axes = keyframe.axes
        self._store = tiff_page.aszarr()
        self._array = zarr.open(self._store, mode="r")
        self.shape: tuple[int, int] = fields["shape"]
        self.pixel_size_nm: float | None = fields["pixel_size_nm"]
        self.source: str = fields["source"]
        self.page: int = fields["page"]
        self.metadata: dict[str, Any] = fields["metadata"]
        self.max_pixels: int = fields["max_pixels"]
        self.dtype = self.read(0, 1, 0, 1).dtype

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` as a 2-D grey array (channel policy applied).

        Only the TIFF tiles that overlap the region are decoded.

        Raises
        ------
        ImageTooLargeError
            If the region holds more than ``max_pixels`` pixels.
        DecodeError
            If a tile of the region cannot be decoded.
        """
        h, w = self.shape
        x1 = w if x1 is None else x1
        y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        n = max(0, y1 - y0) * max(0, x1 - x0)
        if n > self.max_pixels:
            raise ImageTooLargeError(
                f"A region of {y1 - y0}x{x1 - x0} pixels of {self.source!r} ({n:,}) is more "
                f"than max_pixels={self.max_pixels:,}; read smaller regions."
            )
        index = tuple(
            slice(y0, y1) if ax == "Y" else slice(x0, x1) if ax == "X" else slice(None)
            for ax in self._axes
        )
        try:
            raw = np.asarray(self._array[index])
        except _DECODER_ERRORS as exc:
            raise _decode_error(Path(self.source), "tiff", exc) from exc
        if "S" in self._axes:
            raw = np.moveaxis(raw, self._axes.index("S"), -1)
        data, _, _ = _tiff_channel_policy(self._keyframe, raw)
        return _native(data)

    def close(self) -> None:
        """Close the file."""
        self._store.close()
        self._tif.close()

    def __enter__(self) -> TiledPage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tiled_page(
    path: str | os.PathLike[str], *, page: int = 0, max_pixels: int = 2**28
) -> TiledPage:
    """Open one page of a tiled TIFF for reading region by region (a context manager).

    For pages above ``max_pixels`` that :func:`read_micrograph` refuses with
    ``ImageTooLargeError.streamable``; any tiled TIFF page can be opened.

    Raises
    ------
    ImageTooLargeError
        If the page is above ``max_pixels`` and is not streamable (a suspected
        decompression bomb: see the module docstring), with ``streamable = False``.
    UnsupportedFormatError
        If the file is not a TIFF, or the page is not tiled.
    DecodeError, ValueError
        As :func:`read_micrograph`.
    """
    page = check_int(page, "page", minimum=0)
    max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
    path = Path(path)
    if sniff_format(path) != "tiff":
        raise UnsupportedFormatError(
            f"{os.fspath(path)!r} is not a TIFF; only tiled TIFF pages are read by region."
        )
    tif = _open_tiff(path)
    try:
        frames = _tiff_frames(path, tif)
        if page >= len(frames):
            raise _page_error(path, page, len(frames))
        frame = frames[page]
        series = tif.series[frame.series]
        tiff_page = series.pages[frame.page_index]
        keyframe = series.keyframe
        if tiff_page is None or not getattr(keyframe, "is_tiled", False):
            raise UnsupportedFormatError(
                f"{os.fspath(path)!r}: page {page} is not a tiled TIFF page, so it cannot be "
                "read region by region. Use read_micrograph()."
            )
        if not hasattr(tiff_page, "aszarr"):  # a TiffFrame: load the full page header
            tiff_page = tif.pages[tiff_page.index]
        axes, shape = keyframe.axes, keyframe.shape
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
        if height * width > max_pixels and not _tiff_streamable(
            path, tiff_page, keyframe, max_pixels
        ):
            _check_pixels(path, height, width, max_pixels, keyframe.dtype.itemsize)
        probe = (1, 1, shape[axes.index("S")]) if "S" in axes else (1, 1)
        _, policy, _ = _tiff_channel_policy(keyframe, np.zeros(probe, keyframe.dtype))
        pixel_size, metadata = _tiff_metadata(tif, frames, frame, policy)
        metadata["streamed"] = True
        return TiledPage(
            tif,
            tiff_page,
            keyframe,
            shape=(int(height), int(width)),
            pixel_size_nm=pixel_size,
            source=os.fspath(path),
            page=page,
            metadata=metadata,
            max_pixels=max_pixels,
        )
    except BaseException as exc:
        tif.close()
        if isinstance(exc, _DECODER_ERRORS) and not isinstance(
            exc, UnsupportedFormatError | DecodeError | ImageTooLargeError | PageNotFoundError
        ):
            raise _decode_error(path, "tiff", exc) from exc
        raise


def read_regions(
    path: str | os.PathLike[str],
    *,
    page: int = 0,
    region: int = 4096,
    max_pixels: int = 2**28,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y0, x0, array)`` for square regions of side ``region`` of a tiled TIFF page, row
    by row (edge regions are smaller); at most one region is held at a time.

    See :func:`open_tiled_page` for what is accepted and raised.
    """
    region = check_int(region, "region", minimum=1)
    with open_tiled_page(path, page=page, max_pixels=max_pixels) as tp:
        h, w = tp.shape
        for y0 in range(0, h, region):
            for x0 in range(0, w, region):
                yield y0, x0, tp.read(y0, y0 + region, x0, x0 + region)


def _tiff_resolution(page: Any) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    value = tag.value
    try:
        num, den = value
        return float(num) / float(den) if den else None
    except (TypeError, ValueError):
        return _positive(value)


# Pillow --------------------------------------------------------------------------------


def _pillow_class(fmt: str) -> Any:
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    return {
        "png": PngImagePlugin.PngImageFile,
        "jpeg": JpegImagePlugin.JpegImageFile,
        "bmp": BmpImagePlugin.BmpImageFile,
    }[fmt]


_PIL_BITS = {"1": 1, "L": 8, "LA": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8, "RGBX": 8}


def _read_pillow(path: Path, fmt: str, page: int, max_pixels: int) -> Micrograph:
    cls = _pillow_class(fmt)
    # The plugin class is used directly rather than Image.open: Image.open applies Pillow's
    # global decompression-bomb limit; max_pixels is this function's own limit.
    try:
        with cls(os.fspath(path)) as im:
            width, height = im.size
            mode = im.mode
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, fmt, exc) from exc
    if page != 0:
        raise _page_error(path, page, 1)
    _check_pixels(path, height, width, max_pixels, 2 if mode.startswith("I;16") else 1)
    bits = 16 if mode.startswith("I;16") else _PIL_BITS.get(mode)
    decoded = None
    try:
        if fmt == "png":
            with cls(os.fspath(path)) as im:
                im.verify()  # chunk CRCs and the IEND chunk: catches truncation anywhere
            decoded = _read_png16_colour(path)
            if decoded is not None:
                data, policy, stored = decoded
                bits = 16
        if decoded is None:
            with cls(os.fspath(path)) as im:
                im.load()
                data, policy, stored = _pillow_channel_policy(im)
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, fmt, exc) from exc
    metadata = {
        "format": fmt,
        "dtype": str(stored.dtype),
        "shape": list(stored.shape),
        "axes": "YXS" if stored.ndim == 3 else "YX",
        "channel_policy": policy,
        "bit_depth": bits,
        "n_pages": 1,
        "pixel_size_source": None,
        "instrument_tags": [],
        "instrument": {},
        "mode": mode,
    }
    return Micrograph(_native(data), None, os.fspath(path), page, metadata)


def _read_png16_colour(path: Path) -> tuple[np.ndarray, str, np.ndarray] | None:
    """A 16-bit colour or grey+alpha PNG decoded at full depth with imagecodecs, else None.

    Pillow reduces 16-bit RGB(A) and LA PNGs to 8 bits; imagecodecs (tifffile's codec
    package) keeps 16. Without imagecodecs, Pillow's 8-bit decoding is used.
    """
    with open(path, "rb") as fh:
        head = fh.read(26)
    bit_depth, colour_type = head[24], head[25]
    if bit_depth != 16 or colour_type not in (2, 4, 6):  # RGB, grey + alpha, RGBA
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    stored = np.asarray(imagecodecs.png_decode(path.read_bytes()))
    if colour_type == 4:
        return stored[..., 0], "grey, alpha dropped", stored
    extra = ", alpha dropped" if colour_type == 6 else ""
    return _luminance(stored), f"RGB -> luminance (BT.601){extra}", stored


def _pillow_channel_policy(im: Any) -> tuple[np.ndarray, str, np.ndarray]:
    mode = im.mode
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(im)
        return arr, "grey", arr
    if mode in ("LA", "La"):
        arr = np.asarray(im)
        return arr[..., 0], "grey, alpha dropped", arr
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        arr = np.asarray(im)
        extra = ", alpha dropped" if mode in ("RGBA", "RGBa") else ""
        return _luminance(arr), f"RGB -> luminance (BT.601){extra}", arr
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        rgb = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        extra = ", alpha dropped" if has_alpha else ""
        return _luminance(rgb), f"palette -> RGB -> luminance (BT.601){extra}", rgb
    rgb = np.asarray(im.convert("RGB"))
    return _luminance(rgb), f"{mode} -> RGB (Pillow) -> luminance (BT.601)", rgb


# DM (rosettasciio) ---------------------------------------------------------------------


def _import_dm_reader(path: Path) -> Any:
    try:
        from rsciio import digitalmicrograph
    except ImportError as exc:
        raise ImportError(
            f"{os.fspath(path)!r} is a Gatan DigitalMicrograph (DM3/DM4) file; reading it "
            f"needs the optional rosettasciio package: {_EM_HINT}"
        ) from exc
    return digitalmicrograph


def _dm_signals(path: Path, *, lazy: bool) -> list[dict[str, Any]]:
    reader = _import_dm_reader(path)
    try:
        return list(reader.file_reader(os.fspath(path), lazy=lazy))
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, "dm", exc) from exc


def _dm_frames(path: Path, signals: list[dict[str, Any]]) -> list[tuple[int, tuple[int, ...]]]:
    """(signal index, navigation index) of every 2-D image frame in a DM file."""
    frames: list[tuple[int, tuple[int, ...]]] = []
    for si, signal in enumerate(signals):
        shape = tuple(np.shape(signal["data"]))
        axes = signal.get("axes", [])
        nav = [bool(ax.get("navigate", False)) for ax in axes]
        if len(shape) < 2 or len(nav) != len(shape) or any(nav[-2:]) or not all(nav[:-2]):
            continue  # a spectrum, a line profile or a spectrum image: not a 2-D image
        for index in np.ndindex(*shape[:-2]):
            frames.append((si, tuple(int(i) for i in index)))
    if not frames:
        raise UnsupportedFormatError(
            f"{os.fspath(path)!r} is a DM file without a 2-D image (only spectra or "
            "profiles); leave it out of the archive."
        )
    return frames


def _read_dm(path: Path, page: int, max_pixels: int) -> Micrograph:
    _import_dm_reader(path)
    try:
        signals = _dm_signals(path, lazy=True)
    except DecodeError as exc:
        # rosettasciio cannot open RGBA images lazily; their size is bounded by the file's
        # (4 bytes a pixel), which is checked before reading them eagerly.
        if "RGBA" not in str(exc):
            raise
        bound = path.stat().st_size // 4
        if bound > max_pixels:
            raise ImageTooLargeError(
                f"{os.fspath(path)!r} is an RGBA DM image of up to {bound:,} pixels (its size "
                f"cannot be read lazily), more than max_pixels={max_pixels:,}. Pass a larger "
                "max_pixels to read_micrograph if the machine has the memory."
            ) from None
        signals = _dm_signals(path, lazy=False)
    frames = _dm_frames(path, signals)
    if page >= len(frames):
        raise _page_error(path, page, len(frames))
    si, index = frames[page]
    signal = signals[si]
    full = signal["data"]
    shape = tuple(np.shape(full))
    _check_pixels(path, shape[-2], shape[-1], max_pixels, np.dtype(full.dtype).itemsize)
    try:
        raw = np.asarray(full[index] if index else full)
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, "dm", exc) from exc
    if raw.dtype.names and {"R", "G", "B"} <= set(raw.dtype.names):
        stored = np.stack([raw["R"], raw["G"], raw["B"]], axis=-1)
        data, policy = _luminance(stored), "RGB -> luminance (BT.601), alpha dropped"
        stored_dtype = str(stored.dtype)
    else:
        data, policy, stored_dtype = raw, "grey", str(raw.dtype)
    if np.iscomplexobj(data):
        raise UnsupportedFormatError(
            f"{os.fspath(path)!r} holds a complex image (an FFT), not a micrograph; leave it "
            "out of the archive."
        )
    pixel_size = _pixel_size_dm(list(signal.get("axes", [])), len(shape) - 1)
    metadata = {
        "format": "dm",
        "dtype": stored_dtype,
        "shape": list(shape),
        "axes": "".join("Q" for _ in shape[:-2]) + "YX",
        "channel_policy": policy,
        "bit_depth": None,
        "n_pages": len(frames),
        "pixel_size_source": "DM calibration" if pixel_size is not None else None,
        "instrument_tags": [],
        "instrument": {},
    }
    return Micrograph(_native(data), pixel_size, os.fspath(path), page, metadata)


# --------------------------------------------------------------------------- geometry


def detect_info_bar(micrograph: Micrograph) -> int:
    """Height in pixels of the data bar that an SEM burned into the bottom of the image.

    Parameters
    ----------
    micrograph : Micrograph
        As returned by :func:`read_micrograph`.

    Returns
    -------
    height : int
        From the FEI / Thermo Fisher header: the image height minus ``ResolutionY`` of the
        ``[Image]`` (else ``[Scan]``) section, when that is between 1 and the height - 1.
        0 when the file has no FEI header (other instruments are not detected); crop
        manually with :func:`crop` then.

    Examples
    --------
    >>> m = Micrograph(np.zeros((4, 3)), None, "x.tif", 0,
    ...                {"instrument": {"FEI": {"Image": {"ResolutionY": 3}}}})
    >>> detect_info_bar(m)
    1
    """
    fei = micrograph.metadata.get("instrument", {}).get("FEI")
    if not isinstance(fei, Mapping):
        return 0
    height = int(micrograph.data.shape[0])
    for section in ("Image", "Scan"):
        values = fei.get(section)
        if isinstance(values, Mapping) and "ResolutionY" in values:
            try:
                res_y = int(values["ResolutionY"])
            except (TypeError, ValueError):
                continue
            if 0 < res_y < height:
                return height - res_y
            return 0
    return 0


def crop(
    image: ArrayLike, *, bottom: int = 0, top: int = 0, left: int = 0, right: int = 0
) -> np.ndarray:
    """Remove rows and columns from the edges, e.g. an SEM information bar at the bottom.

    Parameters
    ----------
    image : (H, W) array_like
        A grey image.
    bottom, top, left, right : int, optional
        Pixels to remove from each edge, >= 0.

    Returns
    -------
    cropped : (H - top - bottom, W - left - right) ndarray
        A view of ``image``.

    Raises
    ------
    ValueError
        If a margin is not an int >= 0 or nothing would be left.

    Examples
    --------
    >>> crop(np.arange(12).reshape(3, 4), bottom=1, left=1)
    array([[1, 2, 3],
           [5, 6, 7]])
    """
    arr = _check_2d(image)
    b = check_int(bottom, "bottom", minimum=0)
    t = check_int(top, "top", minimum=0)
    lf = check_int(left, "left", minimum=0)
    r = check_int(right, "right", minimum=0)
    h, w = arr.shape
    if t + b >= h or lf + r >= w:
        raise ValueError(
            f"Cropping top={t}, bottom={b}, left={lf}, right={r} from a {h}x{w} image leaves "
            "no pixels. Use smaller margins."
        )
    return arr[t : h - b, lf : w - r]


def resample(image: ArrayLike, *, pixel_size_nm: float, target_nm: float) -> np.ndarray:
    """Rescale an image so that its pixels are ``target_nm`` wide.

    Parameters
    ----------
    image : (H, W) array_like
        A grey image of any real dtype, finite.
    pixel_size_nm : float
        Its current pixel size in nm, > 0.
    target_nm : float
        The wanted pixel size in nm, > 0.

    Returns
    -------
    resampled : (round(H * z), round(W * z)) ndarray of float64
        With ``z = pixel_size_nm / target_nm``: bilinear interpolation
        (``scipy.ndimage.zoom(order=1, grid_mode=True, mode="grid-mirror")``, so that the
        image's outer edges, not its corner pixel centres, stay aligned). When
        downsampling by ``f = 1 / z > 1`` a Gaussian anti-alias filter of
        ``sigma = (f - 1) / 2`` pixels is applied first. A zoom of exactly 1 returns a
        float64 copy.

    Raises
    ------
    ValueError
        For a non-2-D or non-finite image, non-positive sizes, or a result smaller than
        1 x 1 pixel.

    Examples
    --------
    >>> resample(np.ones((4, 6)), pixel_size_nm=1.0, target_nm=2.0).shape
    (2, 3)
    """
    arr = _check_2d(image)
    px = _check_positive(pixel_size_nm, "pixel_size_nm")
    target = _check_positive(target_nm, "target_nm")
    arr = as_image_stack(arr)[0].astype(np.float64)
    zoom = px / target
    h, w = arr.shape
    out_shape = (round(h * zoom), round(w * zoom))
    if min(out_shape) < 1:
        raise ValueError(
            f"Resampling a {h}x{w} image from {px} nm to {target} nm pixels gives a "
            f"{out_shape[0]}x{out_shape[1]} image. Use a smaller target_nm."
        )
    if zoom == 1.0:
        return arr.copy()
    from scipy import ndimage

    factor = 1.0 / zoom
    if factor > 1.0:
        arr = ndimage.gaussian_filter(arr, sigma=(factor - 1.0) / 2.0, mode="mirror")
    # zoom per axis to hit the rounded output shape exactly
    zooms = (out_shape[0] / h, out_shape[1] / w)
    return ndimage.zoom(arr, zooms, order=1, grid_mode=True, mode="grid-mirror")


def tile_starts(n: int, tile_size: int, stride: int) -> list[int]:
    """Starts of the tiles along one axis of length ``n``: a grid that covers every pixel.

    Tiles start every ``stride`` pixels; when the last one stops short of the end, one
    more tile is added flush with the end (it overlaps its neighbour).

    Examples
    --------
    >>> tile_starts(10, 4, 4)
    [0, 4, 6]
    """
    starts = list(range(0, n - tile_size + 1, stride))
    if starts[-1] + tile_size < n:
        starts.append(n - tile_size)
    return starts


def tile(
    image: ArrayLike,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    min_fraction: float = 0.5,
    source: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut an image into square tiles on a regular grid that covers every pixel.

    Parameters
    ----------
    image : (H, W) array_like
        A grey image.
    tile_size : int, optional
        Side ``s`` of the square tiles, >= 1.
    stride : int, optional
        Step between tile origins, 1 <= stride <= tile_size; default ``tile_size``
        (no overlap).
    min_fraction : float, optional
        In (0, 1]. A side shorter than ``tile_size`` but at least
        ``min_fraction * tile_size`` is reflect-padded up to ``tile_size``; a shorter one is
        an error.
    source : str, optional
        Name of the file the image came from, used in error messages.

    Returns
    -------
    tiles : (t, s, s) ndarray
        The tiles, row by row, in the image's dtype (a copy).
    origins : (t, 2) ndarray of int64
        ``(row, column)`` of each tile's top-left pixel in the image.

    Raises
    ------
    ImageTooSmallError
        If a side is shorter than ``min_fraction * tile_size``.
    ValueError
        For a non-2-D image or invalid options.

    Notes
    -----
    Origins along a side of length ``n >= s`` are ``0, stride, 2 stride, ...`` while the
    tile fits; if the last one ends before ``n``, one more tile starting at ``n - s`` is
    added, flush with the edge, overlapping its neighbour (no pixel is dropped). A side with
    ``min_fraction * s <= n < s`` is padded at the end (bottom or right) with
    ``np.pad(mode="reflect")`` and gives a single tile at origin 0 along that axis; the
    padding is recorded by the origins: a tile holds
    ``np.minimum(origins + s, image.shape) - origins`` real rows and columns.

    Examples
    --------
    >>> tiles, origins = tile(np.arange(30).reshape(5, 6), tile_size=4)
    >>> tiles.shape, origins.tolist()
    ((4, 4, 4), [[0, 0], [0, 2], [1, 0], [1, 2]])
    """
    arr = _check_2d(image)
    s = check_int(tile_size, "tile_size", minimum=1)
    step = s if stride is None else check_int(stride, "stride", minimum=1)
    if step > s:
        raise ValueError(
            f"The 'stride' parameter must be <= tile_size={s} so that tiles cover every "
            f"pixel. Got {step} instead."
        )
    if (
        isinstance(min_fraction, bool)
        or not isinstance(min_fraction, numbers.Real)
        or not 0 < min_fraction <= 1
    ):
        raise ValueError(
            f"The 'min_fraction' parameter must be a number in (0, 1]. Got {min_fraction!r} "
            "instead."
        )
    h, w = arr.shape
    minimum = min_fraction * s
    if h < minimum or w < minimum:
        name = f"{source!r}: the" if source else "The"
        raise ImageTooSmallError(
            f"{name} image is {h}x{w} pixels, smaller than min_fraction * tile_size = "
            f"{min_fraction} * {s} = {minimum:g} pixels on a side, the least that is padded "
            "up to a tile. Use a smaller tile_size or min_fraction, or leave the image out."
        )
    pad = (max(0, s - h), max(0, s - w))
    if any(pad):
        if min(h, w) < 2:
            arr = np.pad(arr, ((0, pad[0]), (0, pad[1])), mode="symmetric")
        else:
            arr = np.pad(arr, ((0, pad[0]), (0, pad[1])), mode="reflect")
        _log.info(
            "Reflect-padded a %dx%d image%s by %d rows and %d columns to fit %d-pixel tiles",
            h,
            w,
            f" ({source})" if source else "",
            pad[0],
            pad[1],
            s,
        )
    rows = tile_starts(arr.shape[0], s, step)
    cols = tile_starts(arr.shape[1], s, step)
    origins = np.array([(r, c) for r in rows for c in cols], dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(arr, (s, s))
    tiles = windows[origins[:, 0], origins[:, 1]].copy()
    return tiles, origins
