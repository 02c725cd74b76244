r"""Finding and decoding micrograph files: the only code in microscale that opens images.

It finds the files (:func:`discover`), tells images from everything else by their first
bytes (:func:`sniff_format`) and decodes one 2-D grey image with its physical pixel size
(:func:`read_micrograph`), or a large tiled TIFF page region by region
(:func:`open_tiled_page`).

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
Every micrograph comes out as one 2-D ``(H, W)`` grey array (docs/method.md section 1):

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
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microscale._validation import check_int
from microscale.errors import (
    DecodeError,
    DecompressionBombError,
    ImageTooLargeError,
    PageNotFoundError,
    UnsupportedFormatError,
)
from microscale.io.metadata import (
    Micrograph,
    has_dtd,
    jsonable,
    pixel_size_dm,
    pixel_size_fei,
    pixel_size_imagej,
    pixel_size_ome,
    pixel_size_resolution,
    pixel_size_zeiss,
    positive_or_none,
)

__all__ = [
    "DecodeError",
    "DecompressionBombError",
    "FORMATS",
    "ImageTooLargeError",
    "MAX_COMPRESSION_RATIO",
    "Micrograph",
    "TiledPage",
    "UnsupportedFormatError",
    "count_pages",
    "discover",
    "file_digest",
    "open_tiled_page",
    "page_shape",
    "read_micrograph",
    "read_regions",
    "sniff_format",
]

_log = logging.getLogger(__name__)


FORMATS: tuple[str, ...] = ("tiff", "png", "jpeg", "bmp", "dm")


#: ITU-R BT.601 luma weights for R, G, B.
BT601 = (0.299, 0.587, 0.114)


_EM_HINT = "pip install 'microscale[em]'"


#: A tiled TIFF page above ``max_pixels`` is streamed (not refused) only when the file
#: stores at least 1/MAX_COMPRESSION_RATIO of its decoded bytes; see the module docstring.
MAX_COMPRESSION_RATIO = 100


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


def _open_tiff(path: Path) -> Any:
    """A ``tifffile.TiffFile``; an OME-XML description with a DTD is never parsed.

    OME-XML has no use for DOCTYPE or ENTITY declarations, and they are how an XML
    "billion laughs" bomb expands. Such a file is opened as a plain TIFF instead
    (``is_ome=False``): its pixels are read, its OME metadata ignored.
    """
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        if tif.is_ome and has_dtd(tif.pages.first.description):
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
            if _tiff_budget(path, page, tiff_page, keyframe, max_pixels):
                exc = ImageTooLargeError(
                    f"{os.fspath(path)!r} holds a {height}x{width} image "
                    f"({height * width:,} pixels), more than max_pixels={max_pixels:,} to "
                    "decode at once; it is a tiled TIFF whose stored data make it genuine "
                    "(not a decompression bomb), so read it region by region with "
                    "open_tiled_page() or read_regions(), or pass a larger max_pixels."
                )
                exc.streamable = True
                raise exc

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
    _add_sidecars(path, metadata)
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
        ("OME-XML PhysicalSizeX", pixel_size_ome(ome, frame.series) if ome else None),
        ("FEI [Scan] PixelWidth", pixel_size_fei(fei)),
        ("Zeiss AP_IMAGE_PIXEL_SIZE", pixel_size_zeiss(sem)),
        ("ImageJ unit and XResolution", pixel_size_imagej((ij or {}).get("unit"), x_res)),
        ("TIFF XResolution and ResolutionUnit", pixel_size_resolution(x_res, unit_code)),
    ]
    pixel_size, source = next(((v, k) for k, v in candidates if v is not None), (None, None))

    instrument: dict[str, Any] = {}
    if fei:
        instrument["FEI"] = jsonable(fei)
    if sem:
        instrument["CZ_SEM"] = jsonable({k: v for k, v in sem.items() if k})
    tescan_tag = first.tags.get(TESCAN_TAG)
    tescan = parse_ini(tescan_tag.value) if tescan_tag is not None else None
    if tescan:
        instrument["TESCAN"] = tescan
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


def _tiff_stored_bytes(path: Path, page: int, tiff_page: Any, keyframe: Any) -> int:
    """Bytes a TIFF page stores for its tiles or strips; refuses shared or overlapping ranges.

    Each range is clipped to the file's size; empty ranges (offset or byte count 0: sparse
    tiles, read as the fill value) are left out. Two ranges that share a byte mean the same
    compressed bytes are decoded as several tiles: a decompression bomb, refused with
    :class:`DecompressionBombError` before anything is decoded.
    """
    axes, shape = keyframe.axes, keyframe.shape
    height, width = int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    size = os.stat(path).st_size
    offsets = np.asarray(tiff_page.dataoffsets, dtype=np.int64)
    counts = np.asarray(tiff_page.databytecounts, dtype=np.int64)
    keep = (offsets > 0) & (counts > 0) & (offsets < size)
    start = offsets[keep]
    stop = np.minimum(start + counts[keep], size)
    order = np.argsort(start, kind="stable")
    start, stop = start[order], stop[order]
    shared = stop[:-1] > start[1:]  # a range that begins before the previous one ends
    if shared.any():
        kind = "tiles" if getattr(keyframe, "is_tiled", False) else "strips"
        first = int(np.flatnonzero(shared)[0])
        stored = int(np.maximum.accumulate(stop)[-1] - start[0]) if start.size else 0
        raise DecompressionBombError(
            f"{os.fspath(path)!r} is a decompression bomb: page {page} declares a {height}x"
            f"{width} image ({height * width:,} pixels) in {len(offsets):,} {kind}, but "
            f"{int(shared.sum()):,} of them share or overlap the bytes of another (e.g. "
            f"bytes {int(start[first + 1]):,}-{int(stop[first + 1]):,} and "
            f"{int(start[first]):,}-{int(stop[first]):,}), so {stored:,} stored bytes would "
            "be decoded again and again. The file was crafted or is corrupt; it is refused "
            "without decoding. Leave it out of the archive."
        )
    return int((stop - start).sum())


def _tiff_budget(path: Path, page: int, tiff_page: Any, keyframe: Any, max_pixels: int) -> bool:
    """Check a TIFF page against the pixel budget from its header; True if it is streamed.

    Refuses shared or overlapping data ranges (:func:`_tiff_stored_bytes`) on every page.
    Within ``max_pixels``: False. Above it, a page is streamable when it is tiled, each
    TIFF tile holds at most ``max_pixels`` pixels and its stored bytes are at least
    ``1 / MAX_COMPRESSION_RATIO`` of its decoded bytes (True); a tiled page that stores
    less is a bomb (:class:`DecompressionBombError`); any other page is too large
    (:class:`ImageTooLargeError`).
    """
    axes, shape = keyframe.axes, keyframe.shape
    height, width = int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    stored = _tiff_stored_bytes(path, page, tiff_page, keyframe)
    if height * width <= max_pixels:
        return False
    itemsize = keyframe.dtype.itemsize
    tiled = getattr(keyframe, "is_tiled", False)
    if not tiled or int(keyframe.tilelength) * int(keyframe.tilewidth) > max_pixels:
        _check_pixels(path, height, width, max_pixels, itemsize)
    decoded = math.prod(keyframe.shape) * itemsize
    if stored * MAX_COMPRESSION_RATIO >= decoded:
        return True
    raise DecompressionBombError(
        f"{os.fspath(path)!r} holds a {height}x{width} image ({height * width:,} pixels), more "
        f"than max_pixels={max_pixels:,}, and stores {stored:,} bytes for {decoded:,} decoded "
        f"(1:{decoded / max(stored, 1):,.0f}, beyond 1:{MAX_COMPRESSION_RATIO}): a "
        "decompression bomb, refused without decoding. Leave it out of the archive, or pass "
        "a larger max_pixels if it is genuine and the machine has the memory."
    )


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
        _tiff_budget(path, page, tiff_page, keyframe, max_pixels)
        probe = (1, 1, shape[axes.index("S")]) if "S" in axes else (1, 1)
        _, policy, _ = _tiff_channel_policy(keyframe, np.zeros(probe, keyframe.dtype))
        pixel_size, metadata = _tiff_metadata(tif, frames, frame, policy)
        metadata["streamed"] = True
        _add_sidecars(path, metadata)
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


def page_shape(
    path: str | os.PathLike[str], *, page: int = 0, max_pixels: int | None = None
) -> tuple[int, int]:
    """``(H, W)`` of one page as its header declares it, without decoding any pixel.

    For a TIFF page, the layout of its data is checked too: tiles or strips whose byte
    ranges are shared or overlap raise :class:`DecompressionBombError`. With
    ``max_pixels``, every check that :func:`read_micrograph` makes from the header is made:
    a page above it raises as :func:`read_micrograph` would, unless it is a tiled TIFF page
    that can be streamed (:func:`open_tiled_page`), whose shape is returned. Use it to
    budget an image by its declared size before reading it.

    Parameters
    ----------
    path : str or path-like
        An image file (any format :func:`read_micrograph` reads).
    page : int, optional
        The page, from 0.
    max_pixels : int, optional
        The pixel budget of :func:`read_micrograph`; None: not checked.

    Returns
    -------
    shape : (int, int)
        Rows and columns of the 2-D page.

    Raises
    ------
    DecompressionBombError
        For a TIFF page whose data ranges are shared or overlap, or (with ``max_pixels``) a
        tiled page above the budget that stores too few bytes.
    ImageTooLargeError
        With ``max_pixels``, for a page above it that cannot be streamed.
    UnsupportedFormatError, DecodeError, ImportError, ValueError
        As :func:`read_micrograph`.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "a.tif"
    ...     tifffile.imwrite(p, np.zeros((3, 4), np.uint8))
    ...     page_shape(p)
    (3, 4)
    """
    page = check_int(page, "page", minimum=0)
    if max_pixels is not None:
        max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is None:
        raise _not_an_image(path)
    shape = _page_shape(path, fmt, page, max_pixels)
    if max_pixels is not None and fmt != "tiff":
        _check_pixels(path, shape[0], shape[1], max_pixels, 1)
    return shape


def _page_shape(path: Path, fmt: str, page: int, max_pixels: int | None) -> tuple[int, int]:
    try:
        if fmt == "tiff":
            with _open_tiff(path) as tif:
                frames = _tiff_frames(path, tif)
                if page >= len(frames):
                    raise _page_error(path, page, len(frames))
                series = tif.series[frames[page].series]
                tiff_page = series.pages[frames[page].page_index]
                keyframe = series.keyframe
                axes, shape = keyframe.axes, keyframe.shape
                if tiff_page is not None and max_pixels is not None:
                    _tiff_budget(path, page, tiff_page, keyframe, max_pixels)
                elif tiff_page is not None:
                    _tiff_stored_bytes(path, page, tiff_page, keyframe)
                return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
        if fmt == "dm":
            try:
                signals = _dm_signals(path, lazy=True)
            except DecodeError as exc:  # RGBA images cannot be opened lazily: see _read_dm
                if "RGBA" not in str(exc):
                    raise
                h, w = _read_dm(path, page, max_pixels or path.stat().st_size).data.shape
                return int(h), int(w)
            frames_dm = _dm_frames(path, signals)
            if page >= len(frames_dm):
                raise _page_error(path, page, len(frames_dm))
            shape = tuple(np.shape(signals[frames_dm[page][0]]["data"]))
            return int(shape[-2]), int(shape[-1])
        if page != 0:
            raise _page_error(path, page, 1)
        with _pillow_class(fmt)(os.fspath(path)) as im:
            width, height = im.size
        return int(height), int(width)
    except (UnsupportedFormatError, DecodeError, ImageTooLargeError, PageNotFoundError):
        raise
    except _DECODER_ERRORS as exc:
        raise _decode_error(path, fmt, exc) from exc


#: TIFF tag of TESCAN's INI-style header (``[MAIN]``, ``[SEM]`` sections).
TESCAN_TAG = 50431

#: Largest sidecar text read (bytes); vendors write a few kilobytes.
SIDECAR_MAX_BYTES = 65536


def parse_ini(text: object) -> dict[str, dict[str, str]]:
    """Sections of an INI-style header (TESCAN, Hitachi) as ``{section: {key: value}}``.

    Keys keep their case; lines that are not ``key=value`` are ignored; ``{}`` for anything
    that is not text.

    Examples
    --------
    >>> parse_ini("[MAIN]\\r\\nImageStripSize=76\\r\\nnoise\\r\\n[SEM]\\r\\nHV=15000")
    {'MAIN': {'ImageStripSize': '76'}, 'SEM': {'HV': '15000'}}
    """
    if isinstance(text, bytes):
        text = _sidecar_text(text)
    if not isinstance(text, str):
        return {}
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] | None = None
    for line in text.replace("\x00", "").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1].strip(), {})
        elif "=" in line and section is not None:
            key, _, value = line.partition("=")
            section[key.strip()] = value.strip()
    return out


def _sidecar_text(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_sidecar(path: Path) -> str | None:
    """The text of a sidecar file next to an image, or None.

    Only a regular file (never a link, FIFO or device: checked with ``lstat``) of at most
    ``SIDECAR_MAX_BYTES`` is read.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > SIDECAR_MAX_BYTES:
        return None
    try:
        with open(path, "rb") as fh:
            return _sidecar_text(fh.read(SIDECAR_MAX_BYTES))
    except OSError:
        return None


def _add_sidecars(path: Path, metadata: dict[str, Any]) -> None:
    """Vendor sidecars of an SEM image into ``metadata["instrument"]``.

    ``<name>.txt``: Hitachi (``[SemImageFile]`` section, as ``"Hitachi"``) or JEOL
    (``$CM_...`` lines, as ``"JEOL"``); ``<name>-<ext>.hdr``: TESCAN (``[MAIN]``, as
    ``"TESCAN"``, unless the TIFF tag gave it already).
    """
    instrument = metadata.setdefault("instrument", {})
    text = _read_sidecar(path.with_suffix(".txt")) if path.suffix.lower() != ".txt" else None
    if text:
        if "[SemImageFile]" in text:
            hitachi = parse_ini(text).get("SemImageFile")
            if hitachi:
                instrument["Hitachi"] = hitachi
        elif "$CM_" in text:
            jeol = {}
            for line in text.splitlines():
                key, _, value = line.strip().partition(" ")
                if key.startswith("$"):
                    jeol[key] = value.strip()
            instrument["JEOL"] = jeol
    if "TESCAN" not in instrument and path.suffix:
        hdr = path.with_name(f"{path.stem}-{path.suffix[1:]}.hdr")
        tescan = parse_ini(_read_sidecar(hdr))
        if "MAIN" in tescan:
            instrument["TESCAN"] = tescan
    if not instrument:
        metadata["instrument"] = {}


def _tiff_resolution(page: Any) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    value = tag.value
    try:
        num, den = value
        return float(num) / float(den) if den else None
    except (TypeError, ValueError):
        return positive_or_none(value)


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
    _add_sidecars(path, metadata)
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
    pixel_size = pixel_size_dm(list(signal.get("axes", [])), len(shape) - 1)
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
