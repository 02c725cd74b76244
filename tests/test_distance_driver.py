"""The in-memory driver centres each group of columns of all rows once: the same bits as
block pair by block pair, with each row centred once per group instead of once per pair."""

import numpy as np
import pytest

import microscale.distance as dist
from microscale.distance import cancellation_limits, pairwise_distances

#: Long enough rows for float32 products (below about 15,000 "mixed" is float64 throughout).
D = 20_000


def _rows(n: int, d: int, seed: int, dtype=np.float32) -> np.ndarray:
    """Positive, correlated rows with near-duplicates and an exact duplicate, so that every
    step of the kernel (float32, float64 sub-block, direct differences) has pairs."""
    rng = np.random.default_rng(seed)
    base = rng.random(d) + 1.0
    x = base + 0.05 * rng.standard_normal((n, d))
    x[1] = x[0] + 1e-5 * rng.standard_normal(d)  # F beyond F1: float64 sub-block
    x[n - 1] = x[2]  # an exact duplicate: direct differences, exactly 0
    x[5:9] = x[4] + 1e-9 * rng.standard_normal((4, d))  # beyond F2: direct differences
    return np.abs(x).astype(dtype)


def _pair_by_pair(monkeypatch: pytest.MonkeyPatch, *args, **kwargs) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(dist, "_ALL_ROWS_BYTES", 0)  # nothing fits: block pair by block pair
        return pairwise_distances(*args, **kwargs)


def _centred_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by the rows of every call to the centring step."""
    counts: list[int] = []
    original = dist._centre_into

    def counting(dst, raw, c):
        counts.append(raw.shape[0])
        original(dst, raw, c)

    monkeypatch.setattr(dist, "_centre_into", counting)
    return counts


@pytest.mark.parametrize("precision", ["mixed", "float64"])
@pytest.mark.parametrize("block_size", [7, 16, 64])
def test_the_same_bits_as_block_pair_by_block_pair(monkeypatch, precision, block_size):
    assert cancellation_limits(D)[0] > 2  # "mixed" is float32 products here
    x = _rows(45, D, seed=1)
    y = _rows(20, D, seed=2)
    for args in ((x,), (x, y)):
        expected = _pair_by_pair(monkeypatch, *args, block_size=block_size, precision=precision)
        got = pairwise_distances(*args, block_size=block_size, precision=precision)
        assert np.array_equal(got, expected)
    same = pairwise_distances(x, block_size=block_size, precision=precision)
    assert np.array_equal(same, same.T) and not np.diag(same).any()
    assert same[2, 44] == 0.0


def test_float64_rows_and_a_group_narrower_than_the_rest(monkeypatch):
    d = dist._GROUP + 1000  # two groups of columns, the second narrower
    x = _rows(24, d, seed=3, dtype=np.float64)
    expected = _pair_by_pair(monkeypatch, x, block_size=10)
    assert np.array_equal(pairwise_distances(x, block_size=10), expected)


def test_each_row_is_centred_once_per_group_of_columns(monkeypatch):
    n, d, b = 40, 2 * dist._GROUP, 10  # 4 blocks, 2 groups of columns
    x = _rows(n, d, seed=4)
    counts = _centred_rows(monkeypatch)
    pairwise_distances(x, block_size=b)
    assert sum(counts) == n * 2
    counts.clear()
    _pair_by_pair(monkeypatch, x, block_size=b)
    # 4 diagonal pairs centre one block, 6 others two: 16 blocks per group
    assert sum(counts) == (4 * b + 6 * 2 * b) * 2


def test_beyond_the_memory_limit_it_goes_block_pair_by_block_pair(monkeypatch):
    x = _rows(40, D, seed=5)
    counts = _centred_rows(monkeypatch)
    rows_bytes = 40 * dist._GROUP * 4  # one group of columns of all rows, float32
    monkeypatch.setattr(dist, "_ALL_ROWS_BYTES", rows_bytes - 1)
    groups = -(-D // dist._GROUP)
    pairwise_distances(x, block_size=10)
    assert sum(counts) == (4 * 10 + 6 * 2 * 10) * groups
    counts.clear()
    monkeypatch.setattr(dist, "_ALL_ROWS_BYTES", rows_bytes)
    pairwise_distances(x, block_size=10)
    assert sum(counts) == 40 * groups
