"""Synthetic SEM micrographs with and without an information bar, for tests and benchmarks.

Examples
--------
>>> image = with_info_bar(sem_specimen(h=96, w=128), 20)
>>> image.shape, int(image[-20:].max()), int(image[-20:-19].min())
((96, 128), 255, 255)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ZEISS_HEADER", "sem_specimen", "with_info_bar"]

#: A Zeiss SmartSEM ``CZ_SEM`` header (TIFF tag 34118) with a 0.543 nm pixel, as in issue 13.
ZEISS_HEADER = (
    "0\r\n0\r\n"
    "AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 0.543 nm\r\n"
    "DP_DETECTOR_CHANNEL\r\nSignal A = InLens\r\n"
    "AP_MAG\r\nMag = 200.00 K X\r\n"
)


def sem_specimen(h: int = 768, w: int = 1024, *, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A nanoporous-gold-like SEM texture: blurred ligaments and pores, plus shot noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(h, w)), 4)
    field = np.tanh(field / field.std() * 1.5)
    image = 120 + 80 * field + rng.normal(0, 12, (h, w))
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 255
    return np.clip(image * (top / 255), 0, top).astype(dtype)


def with_info_bar(image, rows, *, fill=0, ink=255, edge="bottom", seed=1):
    """``image`` with a vendor-like bar: a fill, a separator line, text lines, a scale bar."""
    rng = np.random.default_rng(seed)
    w = image.shape[1]
    bar = np.full((rows, w), fill, image.dtype)
    bar[0] = ink  # the line between micrograph and bar
    for y0 in range(max(3, rows // 6), rows - 8, 14):  # lines of "glyphs"
        for x0 in range(10, w - 40, 9):
            if rng.random() < 0.6:
                gh = min(9, rows - y0 - 1)
                glyph = rng.random((gh, 6)) < 0.35
                bar[y0 : y0 + gh, x0 : x0 + 6][glyph] = ink
    bar[rows // 2 : rows // 2 + 3, w - 200 : w - 60] = ink  # the scale bar
    out = image.copy()
    if edge == "bottom":
        out[-rows:] = bar
    else:
        out[:rows] = bar[::-1]
    return out
