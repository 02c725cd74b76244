r"""Preparing a grey image for the texture descriptors: crop, resample, tile.

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

import logging
import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from microscale._validation import check_int
from microscale.errors import (
    ImageTooSmallError,
)
from microscale.intensity import as_image_stack

__all__ = ["ImageTooSmallError", "count_tiles", "crop", "resample", "tile", "tile_starts"]

_log = logging.getLogger(__name__)


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


def count_tiles(shape: tuple[int, int], *, tile_size: int = 256, stride: int | None = None) -> int:
    """Number of tiles :func:`tile` cuts from an image of ``shape``, without the image.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``, e.g. as a file's header declares it (:func:`microscale.io.page_shape`).
    tile_size, stride : int, optional
        As :func:`tile`.

    Returns
    -------
    n : int
        ``len(tile_starts(H)) * len(tile_starts(W))``, a side shorter than a tile counting
        as one tile (it is padded), so that the tiles a declared size would produce are
        known before anything is decoded.

    Examples
    --------
    >>> count_tiles((20480, 20480)), count_tiles((768, 1024)), count_tiles((10, 10))
    (6400, 12, 1)
    """
    s = check_int(tile_size, "tile_size", minimum=1)
    step = s if stride is None else check_int(stride, "stride", minimum=1)
    h, w = (check_int(int(n), "shape", minimum=0) for n in shape)
    per_side = [(max(n, s) - s) // step + 1 + ((max(n, s) - s) % step > 0) for n in (h, w)]
    return per_side[0] * per_side[1]


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
