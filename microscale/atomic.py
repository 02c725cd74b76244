"""Whole-file writes that a reader sees complete: the old file or the new one, never a part.

Light: standard library only (the run log and the lock's neighbours import it without zarr).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync and rename.

    Parameters
    ----------
    path : Path
        The file to write; its folder must exist.
    data : bytes
        The whole content.

    Notes
    -----
    A crash leaves the old file (or none) and at most a hidden ``.NAME.PID.HEX.tmp``
    beside it, which this function never reuses.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "record.json"
    >>> atomic_write(p, b"{}")
    >>> p.read_bytes()
    b'{}'
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
