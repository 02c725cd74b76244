"""Scratch buffers that outlive one task: each thread keeps its own, until :func:`release`.

A distance task reads two row blocks of up to ``block_size * d * 4`` bytes (1.25 GB at
``b = 1024``, ``d = 305,888``) and the kernel needs about 200 MB of panels. Allocated per
task, every byte of them is fresh memory, and on virtual machines the page faults of
fresh memory are slower than the work done in it: measured on the 2-core dev VM, filling
fresh memory ran at 0.4-2.5 GB/s (4 GB/s with transparent huge pages once the kernel
had them, 0.6 GB/s while it was compacting memory for them) against 15-25 GB/s into
memory already touched; a task of 4 block pairs spent more time faulting its two block
buffers in than reading them from Zarr. So a stage borrows its big buffers here and gives
them all back with :func:`release` when the stage is over (the driver calls it on every
Dask worker). Between the two, a worker thread holds at most what one of its tasks
needs at its peak anyway.

Buffers are per thread (a Dask worker may run several tasks at once) and per name; a
buffer grows when asked for more bytes and is otherwise reused as it is. Contents are
undefined.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["buffer", "held_bytes", "release"]

_lock = threading.Lock()
_buffers: dict[tuple[int, str], np.ndarray] = {}  # (thread id, name) -> flat uint8 buffer


def buffer(name: str, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """This thread's buffer ``name``, viewed as a C-contiguous array of ``shape``, ``dtype``.

    Parameters
    ----------
    name : str
        What the buffer is for, e.g. ``"distance.block.0"``. Two live arrays of one thread
        must not share a name: they would share memory.
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray of ``shape`` and ``dtype``
        Undefined contents. Valid until this thread asks for ``name`` again with more
        bytes, or until :func:`release`.

    Examples
    --------
    >>> a = buffer("doc.example", (2, 3), np.float32)
    >>> b = buffer("doc.example", (3, 2), np.float32)
    >>> bool(np.shares_memory(a, b)), release() >= 24
    (True, True)
    """
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    key = (threading.get_ident(), name)
    with _lock:
        flat = _buffers.get(key)
        if flat is None or flat.nbytes < nbytes:
            _buffers.pop(key, None)  # drop the small one before allocating the big one
            flat = np.empty(max(nbytes, 1), np.uint8)
            _buffers[key] = flat
    return flat[:nbytes].view(dt).reshape(shape)


def held_bytes() -> int:
    """Bytes held by all threads' buffers of this process."""
    with _lock:
        return sum(b.nbytes for b in _buffers.values())


def release() -> int:
    """Drop every thread's buffers in this process; return the bytes released.

    Arrays handed out earlier keep their memory alive until they are dropped too.
    """
    with _lock:
        freed = sum(b.nbytes for b in _buffers.values())
        _buffers.clear()
    return freed
