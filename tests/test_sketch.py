"""Tests of microscale.sketch: determinism, linearity, the Johnson-Lindenstrauss bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microscale import sketch as sketch_mod
from microscale.sketch import distortion, projection_block, sketch


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    # d = 5000 is not a multiple of block=1024: the last block has 904 rows.
    return np.random.default_rng(0).random((90, 5000), dtype=np.float32)


@pytest.mark.parametrize("split", [1, 17, 64, 65, 89])
def test_batch_split_is_exact(X: np.ndarray, split: int) -> None:
    S = sketch(X, n_components=256, seed=3, block=1024, device="cpu")
    parts = [
        sketch(X[:split], n_components=256, seed=3, block=1024, device="cpu"),
        sketch(X[split:], n_components=256, seed=3, block=1024, device="cpu"),
    ]
    np.testing.assert_array_equal(np.concatenate(parts), S)


def test_same_seed_same_output_other_seed_differs(X: np.ndarray) -> None:
    a = sketch(X[:4], n_components=64, seed=1, device="cpu")
    b = sketch(X[:4], n_components=64, seed=1, device="cpu")
    c = sketch(X[:4], n_components=64, seed=2, device="cpu")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_equals_explicit_projection_matrix(X: np.ndarray) -> None:
    # The oracle: the blocks stacked into R, then one float64 product.
    d, k, block = X.shape[1], 128, 1024
    R = np.concatenate(
        [projection_block(d, k, seed=5, block=block, index=b) for b in range(-(-d // block))]
    )
    assert R.shape == (d, k)
    expected = X.astype(np.float64) @ R.astype(np.float64)
    S = sketch(X, n_components=k, seed=5, block=block, device="cpu")
    np.testing.assert_allclose(S, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_entries_have_variance_one_over_k() -> None:
    R = projection_block(4096, 256, seed=0, block=4096, index=0)
    assert R.dtype == np.float32
    assert abs(R.var() * 256 - 1.0) < 0.01
    assert abs(R.mean()) < 0.01 / math.sqrt(256)


def test_linearity(X: np.ndarray) -> None:
    x, y = X[:10].astype(np.float64), X[10:20].astype(np.float64)
    kw = {"n_components": 128, "seed": 0, "block": 1024, "device": "cpu"}
    lhs = sketch(2.0 * x - 3.0 * y, **kw)
    rhs = 2.0 * sketch(x, **kw).astype(np.float64) - 3.0 * sketch(y, **kw).astype(np.float64)
    np.testing.assert_allclose(lhs, rhs, atol=1e-4 * np.abs(rhs).max())


def test_block_size_changes_only_the_projection_not_its_law(X: np.ndarray) -> None:
    # A different block gives a different (equally valid) projection.
    a = sketch(X[:5], n_components=64, block=1024, device="cpu")
    b = sketch(X[:5], n_components=64, block=5000, device="cpu")
    assert not np.array_equal(a, b)


def test_distortion_within_jl_bound() -> None:
    X = np.random.default_rng(1).standard_normal((60, 20_000)).astype(np.float32)
    S = sketch(X, n_components=1024, seed=0, device="cpu")
    err = distortion(X, S)
    assert err["n_pairs"] == 60 * 59 // 2
    assert err["jl_sigma"] == pytest.approx(1 / math.sqrt(2048))
    # Median |error| of a N(0, sigma) variable is 0.674 sigma = 0.015 at k = 1024.
    assert err["median"] < 0.05
    assert 0.3 * err["jl_sigma"] < err["median"] < 1.5 * err["jl_sigma"]
    assert err["max"] < 6 * err["jl_sigma"]


def test_distortion_of_identity_is_zero(X: np.ndarray) -> None:
    err = distortion(X[:8], X[:8])
    assert err["max"] < 1e-6


def test_small_d_and_integer_input() -> None:
    X = np.arange(12).reshape(4, 3)
    S = sketch(X, n_components=5, device="cpu")
    assert S.shape == (4, 5)
    assert S.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_components": 0}, ValueError, "'n_components' parameter must be a positive int"),
        ({"n_components": 2.5}, ValueError, "'n_components' parameter must be a positive int"),
        ({"seed": -1}, ValueError, "'seed' parameter must be a non-negative int"),
        ({"block": 0}, ValueError, "'block' parameter must be a positive int"),
        ({"device": "nonsense"}, ValueError, "must name a torch device"),
    ],
)
def test_sketch_validation(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sketch(np.ones((2, 4)), **kwargs)


def test_sketch_validation_of_X() -> None:
    with pytest.raises(ValueError, match="must be a 2-D array"):
        sketch(np.ones(4))
    with pytest.raises(TypeError, match="must hold real numbers"):
        sketch(np.ones((2, 4), dtype=complex))
    with pytest.raises(ValueError, match="NaN or infinite"):
        sketch(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="0 columns"):
        sketch(np.ones((2, 0)))


def test_projection_block_validation() -> None:
    with pytest.raises(ValueError, match=r"'index' parameter must be an int in \[0, 2\)"):
        projection_block(10, 4, block=8, index=2)


def test_distortion_validation() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        distortion(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        distortion(np.ones((1, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="All rows of X are identical"):
        distortion(np.ones((3, 4)), np.ones((3, 2)))


def test_projection_is_kept_between_calls_within_the_budget(X: np.ndarray, monkeypatch) -> None:
    """A worker's second batch reuses the projection; past the budget it is regenerated."""
    calls = []
    real = sketch_mod.projection_block

    def counting(*args, **kwargs):
        calls.append(kwargs["index"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sketch_mod, "projection_block", counting)
    sketch_mod._cached_projection.cache_clear()
    a = sketch(X[:3], n_components=8, seed=5, block=7, device="cpu")
    n_blocks = len(calls)
    assert n_blocks == -(-X.shape[1] // 7)
    b = sketch(X[3:], n_components=8, seed=5, block=7, device="cpu")
    assert len(calls) == n_blocks  # cached: no block drawn again
    monkeypatch.setattr(sketch_mod, "CACHE_BYTES", 0)
    c = sketch(X, n_components=8, seed=5, block=7, device="cpu")
    assert len(calls) == 2 * n_blocks  # over the budget: drawn again, same numbers
    np.testing.assert_array_equal(np.concatenate([a, b]), c)
    sketch_mod._cached_projection.cache_clear()


def test_cache_budget_is_a_keyword_and_the_environment_is_read_at_call_time(monkeypatch):
    X = np.random.default_rng(3).random((4, 60), dtype=np.float32)
    calls = []
    real = sketch_mod.projection_block

    def counting(*args, **kwargs):
        calls.append(kwargs["index"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sketch_mod, "projection_block", counting)
    sketch_mod._cached_projection.cache_clear()
    monkeypatch.setenv("MICROSCALE_SKETCH_CACHE_BYTES", "0")  # after the import: still read
    a = sketch(X, n_components=8, block=7, device="cpu")
    b = sketch(X, n_components=8, block=7, device="cpu")
    n_blocks = -(-X.shape[1] // 7)
    assert len(calls) == 2 * n_blocks  # no cache
    c = sketch(X, n_components=8, block=7, device="cpu", cache_bytes=2**20)
    d = sketch(X, n_components=8, block=7, device="cpu", cache_bytes=2**20)
    assert len(calls) == 3 * n_blocks  # the keyword wins over the environment: cached
    for other in (b, c, d):
        np.testing.assert_array_equal(a, other)  # only speed depends on the budget
    with pytest.raises(ValueError, match="'cache_bytes' parameter must be an int >= 0"):
        sketch(X, n_components=8, cache_bytes=-1)
    sketch_mod._cached_projection.cache_clear()
