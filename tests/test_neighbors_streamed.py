"""Running k-nearest lists merged block by block, and the k-NN preservation of a map."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale.neighbors import knn_preservation, merge_nearest


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("splits", [[40], [7, 13, 20], [1] * 40, [30, 10]])
def test_merging_blocks_in_order_is_a_stable_argsort(k, splits):
    rng = np.random.default_rng(k)
    D = rng.integers(0, 6, size=(9, 40)).astype(float)  # many ties
    D[2, 5] = np.nan  # never chosen
    best_d, best_i = np.full((9, k), np.inf), np.full((9, k), -1, dtype=np.int64)
    start = 0
    for c in splits:
        best_d, best_i = merge_nearest(best_d, best_i, D[:, start : start + c], start)
        start += c
    want = np.argsort(np.where(np.isnan(D), np.inf, D), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(best_i, want)
    np.testing.assert_array_equal(best_d, np.take_along_axis(D, want, axis=1))


def test_knn_preservation_is_one_for_an_exact_map_and_low_for_a_shuffled_one():
    x = np.random.default_rng(0).normal(size=(200, 3))
    D = cdist(x, x)
    np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, axis=1, kind="stable")[:, :5]
    assert knn_preservation(idx, x) == 1.0
    shuffled = x[np.random.default_rng(1).permutation(200)]
    assert knn_preservation(idx, shuffled) < 0.1  # chance is 5 / 199
    assert 0 < knn_preservation(idx, x[:, :2]) < 1  # a projection keeps some
    with pytest.raises(ValueError, match="for the same n"):
        knn_preservation(idx[:10], x)


def test_merging_other_lists_in_any_order_gives_the_same_lists():
    rng = np.random.default_rng(3)
    D = rng.integers(0, 5, size=(6, 30)).astype(float)
    cols = rng.permutation(30).reshape(5, 6)  # five lists of six columns, shuffled
    best_d, best_i = np.full((6, 4), np.inf), np.full((6, 4), -1, dtype=np.int64)
    for part in cols:
        idx = np.broadcast_to(part, (6, 6))
        best_d, best_i = merge_nearest(best_d, best_i, D[:, part], indices=idx)
    want = np.argsort(D, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(best_i, want)
