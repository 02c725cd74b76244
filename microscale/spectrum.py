"""Power-spectrum (two-point) baseline descriptor (docs/method.md section 3).

Each image phi is rescaled to [-1, 1] by its min and max, and its power spectrum
S(q) = |FFT(phi)(q)|^2 (Eq. 6) over the full FFT grid is the descriptor, so that the
Euclidean distance between two descriptors is d_ij^2 = sum_q (S_i(q) - S_j(q))^2 (Eq. 7,
the integral written as a sum over the grid). Only images of one shape are comparable.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from microscale.intensity import as_image_stack, normalize_intensity

__all__ = ["power_spectra"]


def power_spectra(
    images: ArrayLike,
    *,
    dtype: np.dtype | type = np.float64,
    batch_size: int = 64,
) -> np.ndarray:
    """Power spectra of grey images, flattened, (n, H, W) -> (n, H*W).

    Parameters
    ----------
    images : (H, W) or (n, H, W) array_like, or a sequence of (H, W) arrays
        Grey images of one shape.
    dtype : numpy floating dtype, optional
        Dtype of the result (the FFT itself runs in float64).
    batch_size : int, optional
        Images transformed at once (bounds the complex128 scratch memory).

    Returns
    -------
    S : (n, H*W) ndarray
        ``|numpy.fft.fft2(phi)|**2`` in the FFT's natural (unshifted) order, row-major,
        where phi is the image rescaled to [-1, 1]. ``S[:, 0]`` is the zero frequency.

    Raises
    ------
    ValueError
        For images of different shapes, non-finite pixels or constant images.

    References
    ----------
    .. [1] N. Lubbers, T. Lookman, K. Barros, Phys. Rev. E 96, 052111 (2017), Sec. III B,
       doi:10.1103/PhysRevE.96.052111.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.cos(2 * np.pi * 3 * np.arange(16) / 16)[None, :].repeat(16, axis=0)
    >>> S = power_spectra(x).reshape(16, 16)
    >>> np.unravel_index(S.argmax(), S.shape)[1] in (3, 13)
    True
    """
    stack = as_image_stack(images)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be a positive int. Got {batch_size!r}.")
    n, h, w = stack.shape
    out = np.empty((n, h * w), dtype=dtype)
    for start in range(0, n, batch_size):
        phi = 2.0 * normalize_intensity(stack[start : start + batch_size], dtype=np.float64) - 1.0
        spec = np.fft.fft2(phi, axes=(-2, -1))
        power = spec.real**2 + spec.imag**2
        out[start : start + len(phi)] = power.reshape(len(phi), -1)
    return out
