"""Per-thread scratch buffers: reuse, growth, isolation between threads, release."""

import threading

import numpy as np
import pytest

from microscale import scratch


@pytest.fixture(autouse=True)
def _empty_pool():
    scratch.release()
    yield
    scratch.release()


def test_a_name_is_one_reused_buffer_viewed_as_asked():
    a = scratch.buffer("t.a", (4, 6), np.float32)
    a[:] = 7
    b = scratch.buffer("t.a", (3, 2), np.float64)  # fewer bytes: the same memory
    assert a.shape == (4, 6) and a.dtype == np.float32 and a.flags.c_contiguous
    assert b.shape == (3, 2) and b.dtype == np.float64
    assert np.shares_memory(a, b)
    assert scratch.held_bytes() == 4 * 6 * 4


def test_a_buffer_grows_when_asked_for_more_and_names_do_not_share():
    small = scratch.buffer("t.a", (2,), np.float64)
    other = scratch.buffer("t.b", (2,), np.float64)
    big = scratch.buffer("t.a", (100,), np.float64)
    assert not np.shares_memory(small, big) and not np.shares_memory(other, big)
    assert scratch.held_bytes() == 100 * 8 + 2 * 8


def test_threads_get_their_own_buffers():
    mine = scratch.buffer("t.a", (8,), np.int64)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(scratch.buffer("t.a", (8,), np.int64)))
    t.start()
    t.join()
    assert not np.shares_memory(mine, theirs[0])
    assert scratch.held_bytes() == 2 * 64


def test_release_drops_every_threads_buffers():
    a = scratch.buffer("t.a", (10,), np.float32)
    t = threading.Thread(target=lambda: scratch.buffer("t.a", (5,), np.float32))
    t.start()
    t.join()
    assert scratch.release() == 60 and scratch.held_bytes() == 0
    assert not np.shares_memory(a, scratch.buffer("t.a", (10,), np.float32))  # new memory
