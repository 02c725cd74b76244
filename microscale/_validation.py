"""The argument checks that several modules share, in one error voice.

Each check returns the validated value (converted where it says so) or raises a
:class:`ValueError` that names the parameter, says what it must be and what it got
("The 'k' parameter must be an int >= 1. Got 0 instead."). Checks that only one module
needs stay in that module.

Examples
--------
>>> check_int(3, "k", minimum=1), check_one_of("ps", "descriptor", ("cnn", "ps"))
(3, 'ps')
>>> check_positive_int(0, "block")
Traceback (most recent call last):
    ...
ValueError: The 'block' parameter must be a positive int. Got 0 instead.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike

from microscale.errors import DtypeError

__all__ = [
    "as_real_rows",
    "check_int",
    "check_non_negative_int",
    "check_one_of",
    "check_positive_int",
    "renamed",
]

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int if it is an int (not a bool) ``>= minimum``."""
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(
            f"The '{name}' parameter must be an int >= {minimum}. Got {value!r} instead."
        )
    return int(value)  # type: ignore[call-overload]


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int if it is an int (not a bool) ``>= 1``."""
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"The '{name}' parameter must be a positive int. Got {value!r} instead.")
    return int(value)  # type: ignore[call-overload]


def check_non_negative_int(value: object, name: str) -> int:
    """``value`` as an int if it is an int (not a bool) ``>= 0``, e.g. a seed."""
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise ValueError(
            f"The '{name}' parameter must be a non-negative int. Got {value!r} instead."
        )
    return int(value)  # type: ignore[call-overload]


def check_one_of(value: T, name: str, choices: Sequence[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"The '{name}' parameter must be one of {choices}. Got {value!r} instead.")
    return value


def as_real_rows(a: ArrayLike, name: str) -> np.ndarray:
    """``a`` as an (n, d) array of real numbers (bool, int or float), not copied.

    Raises
    ------
    ValueError
        If ``a`` is not 2-D.
    DtypeError
        If it holds anything but real numbers (complex, strings, objects); a
        :class:`TypeError` and a :class:`ValueError`.
    """
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_vectors, d). Got {arr.ndim} dimensions "
            f"(shape {arr.shape}) instead."
        )
    if arr.dtype.kind not in "biuf":
        raise DtypeError(
            f"{name} must hold real numbers. Got dtype {arr.dtype} instead. Pass a float32 or "
            f"float64 array, e.g. np.asarray({name}, dtype=np.float32)."
        )
    return arr


def renamed(new: T | None, old: T | None, *, new_name: str, old_name: str, caller: str) -> T | None:
    """The value of a keyword that was renamed: ``new``, or ``old`` with a FutureWarning.

    Keeps the old keyword working for one release (one name per concept across the
    public API: ``n_components``, ``random_state``, ...).

    Raises
    ------
    TypeError
        If both keywords are given.
    """
    if old is None:
        return new
    if new is not None:
        raise TypeError(
            f"{caller}() got both '{new_name}' and its old name '{old_name}': pass only "
            f"'{new_name}'."
        )
    warnings.warn(
        f"{caller}(): '{old_name}' is renamed '{new_name}'; the old name stops working in "
        "the next release.",
        FutureWarning,
        stacklevel=3,
    )
    return old
