"""Builders shared by the tests of microscale/io/ (random arrays, Pillow files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(1234)


def random_array(shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """Random values over the whole range of ``dtype`` (normal values for floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return RNG.standard_normal(shape).astype(dtype)


def bt601(rgb: np.ndarray) -> np.ndarray:
    """Luminance by ITU-R BT.601, rounded to the input's dtype (the oracle of colour input)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(rgb.dtype)


def save_pil(arr: np.ndarray, path: Path, fmt: str, **kw: object) -> Path:
    """Write ``arr`` with Pillow in format ``fmt``; returns ``path``."""
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path
