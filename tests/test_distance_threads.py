"""The kernel's numpy work split over threads: the same bits as unsplit, every row once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import microscale.distance as dm


@pytest.fixture
def threads():
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


@pytest.mark.parametrize(("n", "k"), [(0, 4), (5, 4), (64, 4), (100, 3), (1000, 2)])
def test_the_split_covers_every_row_once(threads, n, k):
    threads(k)
    ranges = dm._split(n)
    assert len(ranges) <= max(1, n // dm._MIN_SPLIT)
    assert [i for s, e in ranges for i in range(s, e)] == list(range(n))


def test_the_split_work_gives_the_same_bits_and_uses_the_pool(threads, monkeypatch):
    rng = np.random.default_rng(3)
    X = (rng.random((150, 5000)) + 10.0).astype(np.float32)
    X[7] = X[3] + 1e-4  # a near-duplicate pair: the float64 fallbacks run too
    threads(4)  # the same for both: the GEMM's own bits may depend on the thread count
    real_split = dm._split
    monkeypatch.setattr(dm, "_split", lambda n: [(0, n)])
    serial = dm.pairwise_distances(X, block_size=64)
    monkeypatch.setattr(dm, "_split", real_split)

    submitted = []
    real_pool = dm._pool()

    class Counting:
        def submit(self, fn, *args):
            submitted.append(args)
            return real_pool.submit(fn, *args)

    monkeypatch.setattr(dm, "_pool", lambda: Counting())
    split = dm.pairwise_distances(X, block_size=64)
    assert submitted, "no work went to the pool with 4 threads"
    np.testing.assert_array_equal(split, serial)
    ref = np.sqrt(((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(split, ref, rtol=1e-6, atol=0)


def test_an_error_in_a_thread_reaches_the_caller(threads):
    threads(2)
    seen = []

    def work(s, e):
        seen.append((s, e))
        if s > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dm._in_parallel(work, 64)
    assert sorted(seen) == [(0, 32), (32, 64)]
