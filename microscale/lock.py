"""The store's run lock: one run at a time on a store, held from its first write to its last.

The lock is an exclusive ``fcntl.flock`` on ``ROOT/.lock``. The file records its holder
(pid, host, start time) while it is held and is emptied when it is released, so:

- **A live holder** keeps the ``flock``: any other process is refused at once with
  :class:`~microscale.errors.StoreLockedError`, whose message names the holder.
- **A holder that died** on this host lost its ``flock`` with its process (the kernel
  drops it), but the file still names it: the next run takes the lock over and logs a
  warning that says so.
- **A holder on another host** that the file names while the ``flock`` is free (a file
  system that does not share ``flock`` between hosts, or a host that went down mid-run)
  cannot be told apart from a live run there: the lock is refused, and the message says how
  to break it once that run is known to be gone: ``microscale unlock --store ROOT``
  (:func:`break_lock`), which empties the file.

The lock is re-entrant within one process: the whole-run holder (``microscale run``, the
``pipeline`` flow) takes it before anything starts, and the stages it runs take it again
without deadlocking. This module imports neither zarr nor Prefect, so that a second run is
refused within a fraction of a second of its start.

Examples
--------
>>> import tempfile
>>> from microscale.lock import store_lock, lock_holder
>>> with tempfile.TemporaryDirectory() as root:
...     with store_lock(root):
...         with store_lock(root):  # re-entrant in one process
...             held = lock_holder(root) is not None
...     held, lock_holder(root)
(True, None)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from microscale.errors import StoreLockedError, UnsupportedFileSystemError

__all__ = [
    "LOCK_NAME",
    "NO_FLOCK_ERRNOS",
    "break_lock",
    "lock_holder",
    "no_flock_message",
    "pid_alive",
    "store_lock",
]

#: Name of the lock file in the store directory.
LOCK_NAME = ".lock"

_log = logging.getLogger(__name__)

#: errno values with which ``flock`` says the file system does not support it (NFS
#: mounted without a lock manager, some FUSE and object-store file systems).
NO_FLOCK_ERRNOS = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
)


def no_flock_message(root: Path, exc: OSError) -> str:
    """What to do when the file system of a store refuses ``flock``."""
    return (
        f"The file system of the store {root} does not support flock ({exc.strerror or exc}), "
        "which microscale needs to keep a second run off a store that one is using. Put the "
        "store on a file system that supports it and renames files atomically: a local disk, "
        "NFSv4 (or v3 with a lock manager; not mounted with 'nolock' or 'local_lock'), "
        "Lustre mounted with '-o flock', GPFS or BeeGFS."
    )


# Locks held by this process: resolved root -> [pid, fd, depth]. flock is per open file, so
# a second open in the same process would conflict with the first; re-entry reuses it.
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_info(fd: int) -> dict[str, Any]:
    """The holder recorded in the open lock file, or {} when it is empty or unreadable."""
    try:
        size = os.fstat(fd).st_size
        info = json.loads(os.pread(fd, size, 0) or b"{}") if size else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid runs on this host (``False`` for no valid pid)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _who(info: dict[str, Any]) -> str:
    return (
        f"pid {info.get('pid', 'unknown')} on {info.get('host', 'an unknown host')}, "
        f"started {info.get('started', 'at an unknown time')}"
    )


def lock_holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder the lock file of the store ``root`` names, or None when it names nobody.

    Returns
    -------
    dict or None
        ``{"pid": int, "host": str, "started": ISO 8601 str}``: a live run, or one that
        died without releasing the lock (see the module docstring).
    """
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_info(fd) or None
    finally:
        os.close(fd)


@contextlib.contextmanager
def store_lock(root: str | os.PathLike[str], *, blocking: bool = False) -> Iterator[Path]:
    """Hold the run lock of the store directory ``root`` for the ``with`` block.

    The directory is created when it does not exist (a run takes the lock before it
    creates the store). See the module docstring for what is refused and what is taken
    over.

    Parameters
    ----------
    root : path
        The store directory.
    blocking : bool, optional
        Wait for a live holder to finish instead of failing at once. A lock named by
        another host is refused either way.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    StoreLockedError
        If another process holds the lock, or the file names a holder on another host.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    path = root / LOCK_NAME
    pid = os.getpid()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == pid:
            held[2] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _HELD_GUARD:
                _HELD[key][2] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in NO_FLOCK_ERRNOS:
                raise UnsupportedFileSystemError(no_flock_message(root, exc)) from exc
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            info = _read_info(fd)
            gone = info.get("host") == socket.gethostname() and not pid_alive(info.get("pid"))
            raise StoreLockedError(
                f"Another microscale run ({_who(info)}) is using the store {root}; wait for "
                "it to finish or stop that process"
                + (
                    " (it has exited: a process it started still holds the lock; stop that "
                    "process)."
                    if gone
                    else "."
                )
            ) from None
        try:
            _take_over(fd, root)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        info = {"pid": pid, "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        with _HELD_GUARD:
            _HELD[key] = [pid, fd, 1]
        try:
            yield path
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _take_over(fd: int, root: Path) -> None:
    """With the ``flock`` held: refuse a lock another host names; log the taking over of
    one a dead process of this host left."""
    info = _read_info(fd)
    if not info:
        return
    host = socket.gethostname()
    if info.get("host") != host:
        raise StoreLockedError(
            f"The store {root} is locked by a microscale run on another host "
            f"({_who(info)}), which may still be running. If it is not (its machine went "
            f"down), break the lock with `microscale unlock --store {root}` and run again."
        )
    _log.warning(
        "Taking over the lock of the store %s left by a run that is gone (%s).", root, _who(info)
    )


def break_lock(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Empty the lock file of the store ``root``: forget a holder that is gone.

    For a lock named by another host whose run is known to have ended (see the module
    docstring). A live holder on this host (or on a file system that shares ``flock``
    between hosts) still holds the ``flock``: it is not broken.

    Returns
    -------
    dict or None
        The holder the file named, or None when it named nobody.

    Raises
    ------
    StoreLockedError
        If a live process holds the lock.
    """
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StoreLockedError(
                f"A running microscale process ({_who(_read_info(fd))}) holds the lock of "
                f"the store {root}; it is not broken. Wait for it or stop it."
            ) from None
        info = _read_info(fd) or None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return info
    finally:
        os.close(fd)
