"""The store's run lock: re-entrant in one process, refused to another, stale locks."""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from microscale import lock
from microscale.errors import StoreLockedError
from microscale.store import create_store
from microscale.testing.runs import lock_held_elsewhere


def _dead_pid():
    """A pid of this host that no process has (a child that has exited and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_holder(root, **info):
    root.mkdir(parents=True, exist_ok=True)
    holder = {"pid": 4242, "host": socket.gethostname(), "started": "2025-01-02T03:04:05+00:00"}
    holder.update(info)
    (root / ".lock").write_text(json.dumps(holder))
    return holder


def _lock_elsewhere(root):
    code = textwrap.dedent(
        f"""
        from microscale.lock import store_lock
        from microscale.errors import StoreLockedError
        try:
            with store_lock({str(root)!r}):
                print("acquired")
        except StoreLockedError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_lock_names_its_holder_while_held_and_nobody_after(tmp_path):
    root = tmp_path / "new-store"  # a run locks the folder before the store exists
    with lock.store_lock(root):
        holder = lock.lock_holder(root)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        message = _lock_elsewhere(root)
        assert message.startswith(f"Another microscale run (pid {os.getpid()} on ")
        assert f"started {holder['started']}" in message
    assert lock.lock_holder(root) is None
    assert _lock_elsewhere(root) == "acquired"


def test_the_run_lock_and_the_stage_lock_are_one_lock_reentrant_in_a_process(tmp_path):
    store = create_store(tmp_path / "s", tile_size=16)
    with lock.store_lock(store.root):
        with store.lock():  # a stage inside the run: no deadlock
            with lock.store_lock(store.root):
                pass
        assert lock.lock_holder(store.root)["pid"] == os.getpid()  # still held
    assert lock.lock_holder(store.root) is None


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_and_logged(tmp_path, caplog):
    root = tmp_path / "s"
    pid = _dead_pid()
    _write_holder(root, pid=pid)
    with caplog.at_level(logging.WARNING, logger="microscale.lock"):
        with lock.store_lock(root):
            assert lock.lock_holder(root)["pid"] == os.getpid()
    (record,) = [r for r in caplog.records if r.name == "microscale.lock"]
    assert record.levelno == logging.WARNING
    assert f"Taking over the lock of the store {root} left by a run that is gone" in (
        record.getMessage()
    )
    assert f"pid {pid} on {socket.gethostname()}" in record.getMessage()


def test_a_lock_named_by_another_host_is_refused_with_how_to_break_it(tmp_path):
    root = tmp_path / "s"
    _write_holder(root, host="node-17.cluster", pid=99)
    message = (
        f"The store {root} is locked by a microscale run on another host (pid 99 on "
        "node-17.cluster, started 2025-01-02T03:04:05+00:00), which may still be running. "
        f"If it is not (its machine went down), break the lock with `microscale unlock "
        f"--store {root}` and run again."
    )
    with pytest.raises(StoreLockedError) as info:
        with lock.store_lock(root):
            pytest.fail("the lock was taken")
    assert str(info.value) == message
    assert lock.lock_holder(root)["host"] == "node-17.cluster"  # left as it was
    assert _lock_elsewhere(root) == message  # not held by the refusal either
    assert lock.break_lock(root)["host"] == "node-17.cluster"
    assert lock.lock_holder(root) is None
    with lock.store_lock(root):
        pass


def test_break_lock_never_breaks_a_live_holder(tmp_path):
    root = tmp_path / "s"
    assert lock.break_lock(root) is None  # no lock file: nothing to do
    with lock_held_elsewhere(root) as proc:
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid} on .* holds the lock"):
            lock.break_lock(root)
        assert lock.lock_holder(root)["pid"] == proc.pid
    assert lock.lock_holder(root) is None
