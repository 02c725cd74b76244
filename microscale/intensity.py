"""Image stacks and intensity normalisation (docs/method.md section 1).

Every descriptor in microscale starts from a single-channel scalar field phi(r) mapped
to [0, 1] per image. Three mappings are offered, and which one was used is recorded with
the results:

``"minmax"`` (default)
    ``(x - min) / (max - min)`` per image. For the synthetic textures, which span
    [-1, 1], this is exactly ``(phi + 1) / 2``.
``"percentile"``
    ``(x - p_lo) / (p_hi - p_lo)`` clipped to [0, 1], with ``percentiles=(0.5, 99.5)``
    by default, so that a few hot or dead pixels do not set the contrast of a real
    micrograph.
``"dtype"``
    keeps the dtype's range: unsigned integers are divided by ``2**bit_depth - 1``
    (``bit_depth`` defaults to the dtype's width; pass 12 for 12-bit data stored in
    uint16), signed integers are mapped from ``[iinfo.min, iinfo.max]``, booleans to
    {0, 1}, and floats must already lie in [0, 1].

A constant image has no texture and is rejected with a :class:`ConstantImageError`; NaN or
infinite pixels are rejected with a :class:`ValueError`. Neither ever reaches a texture
vector as a NaN.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from microscale.errors import ConstantImageError, DtypeError

__all__ = [
    "ConstantImageError",
    "NORMALIZATIONS",
    "as_image_stack",
    "dtype_range",
    "intensity_range",
    "normalize_intensity",
]

Normalization = Literal["minmax", "percentile", "dtype"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "percentile", "dtype")


def _refuse_paths(images: Any) -> None:
    """Raise DtypeError, saying how to read them, if ``images`` are file paths."""
    if isinstance(images, str | os.PathLike):
        items: Any = [images]
    elif isinstance(images, np.ndarray):
        items = images.ravel()[:1] if images.dtype.kind in "US" else []
    elif isinstance(images, Sequence):
        items = images
    else:
        return
    for i, item in enumerate(items):
        if isinstance(item, str | os.PathLike | np.str_):
            raise DtypeError(
                f"Image {i} is a file path ({str(os.fspath(item))!r}), not pixels: read "
                "files first, e.g. microscale.read_micrograph(path).data for each path, then "
                "pass the (H, W) arrays (cut to a common shape, e.g. with microscale.io.tile)."
            )


def as_image_stack(images: ArrayLike, *, min_size: int = 1) -> np.ndarray:
    """Return ``images`` as an ``(n, H, W)`` array, validating shape and values.

    Parameters
    ----------
    images : (H, W) or (n, H, W) array_like, or a sequence of (H, W) arrays
        Single-channel images of one common shape. The dtype is kept.
    min_size : int, optional
        Smallest allowed height and width.

    Returns
    -------
    stack : (n, H, W) ndarray
        A view when possible; the dtype of the input.

    Raises
    ------
    ValueError
        On a wrong number of dimensions, an empty stack, images smaller than
        ``min_size``, images of different shapes, or non-finite pixels.
    """
    _refuse_paths(images)
    if isinstance(images, Sequence) and not isinstance(images, np.ndarray):
        arrays = [np.asarray(a) for a in images]
        if not arrays:
            raise ValueError("No images were given: pass at least one (H, W) image.")
        for i, a in enumerate(arrays):
            if a.ndim != 2:
                raise ValueError(
                    f"Image {i} has {a.ndim} dimensions {a.shape}; every image must be a "
                    "2-D (H, W) grey array. Convert colour images to luminance first."
                )
            if a.shape != arrays[0].shape:
                raise ValueError(
                    f"Images must all have the same shape: image 0 is {arrays[0].shape} but "
                    f"image {i} is {a.shape}. Tile or resample them to a common shape."
                )
        stack = np.stack(arrays)
    else:
        stack = np.asarray(images)
        if stack.ndim == 2:
            stack = stack[np.newaxis]
        if stack.ndim != 3:
            raise ValueError(
                f"Expected an (H, W) image or an (n, H, W) stack of grey images; got an array "
                f"of shape {stack.shape}. Convert colour images to luminance first."
            )
    if stack.shape[0] == 0:
        raise ValueError("No images were given: the stack has length 0.")
    if not (np.issubdtype(stack.dtype, np.number) or stack.dtype == np.bool_):
        raise ValueError(f"Images must be numeric arrays; got dtype {stack.dtype}.")
    if np.iscomplexobj(stack):
        raise ValueError("Images must be real-valued; got a complex array.")
    h, w = stack.shape[1:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"Images are {h}x{w} pixels; at least {min_size}x{min_size} are needed here."
        )
    if np.issubdtype(stack.dtype, np.floating):
        bad = ~np.isfinite(stack).reshape(len(stack), -1).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            count = int((~np.isfinite(stack[first])).sum())
            raise ValueError(
                f"Image {first} contains {count} NaN or infinite pixels "
                f"({int(bad.sum())} image(s) affected); replace or mask them before "
                "computing descriptors."
            )
    return stack


def intensity_range(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image minimum and maximum of an (n, H, W) stack, rejecting constant images.

    Raises
    ------
    ConstantImageError
        If any image has a single value.
    """
    flat = stack.reshape(len(stack), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    constant = lo == hi
    if constant.any():
        first = int(np.flatnonzero(constant)[0])
        raise ConstantImageError(
            f"Image {first} is constant (every pixel equals {flat[first, 0].item()!r}): it has no "
            f"texture ({int(constant.sum())} constant image(s) in the stack). Remove it "
            "from the input."
        )
    return lo, hi


def normalize_intensity(
    images: ArrayLike,
    *,
    method: Normalization = "minmax",
    percentiles: tuple[float, float] = (0.5, 99.5),
    bit_depth: int | None = None,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Map each image's intensities to [0, 1] (docs/method.md section 1).

    Parameters
    ----------
    images : (H, W) or (n, H, W) array_like
        Grey images of any real dtype.
    method : {"minmax", "percentile", "dtype"}, optional
        The mapping; see the module docstring.
    percentiles : (float, float), optional
        Lower and upper percentiles for ``method="percentile"``.
    bit_depth : int, optional
        Significant bits of unsigned integer data for ``method="dtype"`` (12 for 12-bit
        data in uint16). Defaults to the dtype's width.
    dtype : numpy dtype, optional
        Floating dtype of the result.

    Returns
    -------
    out : (n, H, W) ndarray of ``dtype``
        Values in [0, 1].

    Raises
    ------
    ConstantImageError
        If an image has a single value (or, for ``"percentile"``, no contrast between
        the two percentiles).
    ValueError
        For invalid options, non-finite pixels, or values outside the range that
        ``method="dtype"`` assumes.

    Examples
    --------
    >>> import numpy as np
    >>> normalize_intensity(np.array([[0, 2], [4, 8]]))[0]
    array([[0.  , 0.25],
           [0.5 , 1.  ]], dtype=float32)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(
            f"The 'method' parameter must be one of {NORMALIZATIONS}. Got {method!r} instead."
        )
    stack = as_image_stack(images)
    n = len(stack)
    flat = stack.reshape(n, -1)
    lo, hi = intensity_range(stack)
    work = flat.astype(np.float64)
    if method == "minmax":
        lo_f, hi_f = lo.astype(np.float64), hi.astype(np.float64)
    elif method == "percentile":
        p_lo, p_hi = percentiles
        if not 0 <= p_lo < p_hi <= 100:
            raise ValueError(
                "The 'percentiles' parameter must be two numbers 0 <= low < high <= 100. "
                f"Got {percentiles!r} instead."
            )
        lo_f, hi_f = np.percentile(work, [p_lo, p_hi], axis=1)
        flat_contrast = lo_f == hi_f
        if flat_contrast.any():
            first = int(np.flatnonzero(flat_contrast)[0])
            raise ConstantImageError(
                f"Image {first} has no contrast between its {p_lo} and {p_hi} percentiles "
                f"(both equal {lo_f[first]!r}). Use method='minmax' or wider percentiles."
            )
    else:
        lo_f, hi_f = dtype_range(stack.dtype, bit_depth, lo, hi)
    # halved first, so that hi - lo cannot overflow for float64 data near +-1.8e308
    half_lo, half_hi = lo_f / 2, hi_f / 2
    out = (work / 2 - half_lo[:, None]) / (half_hi - half_lo)[:, None]
    if method == "percentile":
        np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(stack.shape).astype(dtype, copy=False)


def dtype_range(
    dtype: np.dtype, bit_depth: int | None, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (low, high) that map the dtype's range to [0, 1].

    The range is the dtype's (``[0, 1]`` for floats and bools); ``bit_depth`` narrows an
    unsigned integer's (12-bit data stored as uint16). ``lo`` and ``hi``, the images' own
    minima and maxima ``(n,)``, are checked to fit in it (a ValueError says what to do).
    """
    n = len(lo)
    if dtype == np.bool_:
        return np.zeros(n), np.ones(n)
    if np.issubdtype(dtype, np.unsignedinteger):
        width = np.iinfo(dtype).bits
        bits = width if bit_depth is None else bit_depth
        if not (isinstance(bits, int | np.integer) and 1 <= bits <= width):
            raise ValueError(
                f"The 'bit_depth' parameter must be an int from 1 to {width} for {dtype} "
                f"data. Got {bit_depth!r} instead."
            )
        top = float(2**bits - 1)
        if hi.max() > top:
            raise ValueError(
                f"Pixel values up to {int(hi.max())} exceed the {bits}-bit range "
                f"[0, {int(top)}]. Pass the right 'bit_depth' (or none for the full {width} "
                "bits), or use method='minmax'."
            )
        return np.zeros(n), np.full(n, top)
    if np.issubdtype(dtype, np.signedinteger):
        info = np.iinfo(dtype)
        return np.full(n, float(info.min)), np.full(n, float(info.max))
    if lo.min() < 0 or hi.max() > 1:
        raise ValueError(
            f"Floating-point images must lie in [0, 1] for method='dtype'; found values in "
            f"[{float(lo.min())}, {float(hi.max())}]. Use method='minmax' or 'percentile'."
        )
    return np.zeros(n), np.ones(n)
