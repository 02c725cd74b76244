"""A store refuses, with a way out, a file system whose flock does not work."""

import errno
import fcntl

import pytest

from microscale import store as st
from microscale.errors import StoreError, UnsupportedFileSystemError


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_file_system_without_flock_is_refused_clearly(tmp_path, monkeypatch, code):
    store = st.create_store(tmp_path / "s", tile_size=8)

    def no_flock(fd, op):  # what NFS without a lock manager, or a FUSE mount, answers
        raise OSError(code, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(UnsupportedFileSystemError, match=r"does not support flock.*Lustre"):
        with store.lock():
            pass
    assert issubclass(UnsupportedFileSystemError, StoreError)
    assert issubclass(UnsupportedFileSystemError, OSError)


def test_a_busy_lock_is_still_a_locked_store(tmp_path, monkeypatch):
    store = st.create_store(tmp_path / "s", tile_size=8)

    def busy(fd, op):
        raise BlockingIOError(errno.EWOULDBLOCK, "busy")

    monkeypatch.setattr(fcntl, "flock", busy)
    with pytest.raises(st.StoreLockedError):
        with store.lock():
            pass
