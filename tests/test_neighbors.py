import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from microscale import store
from microscale.neighbors import (
    clusters,
    matrix_name,
    nearest_neighbors,
    outlier_scores,
)


def _store_with_matrix(tmp_path, D, *, block, descriptor="ps", level="image"):
    st = store.create_store(tmp_path / "st", tile_size=8)
    name = matrix_name(descriptor, level=level)
    store.ensure_distance_matrix(st, name, len(D), block)
    for start in range(0, len(D), block):
        store.write_block(
            st, name, D[start : start + block], rows=(start, min(start + block, len(D)))
        )
    return st


def _brute_force(D, k):
    D = np.array(D, dtype=np.float64)
    np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]  # stable: ties go to the lower index
    return idx, np.take_along_axis(D, idx, axis=1)


def _points_with_ties(n=23, seed=0):
    """Integer grid points: many equal distances; rows 3 and 11 are exact duplicates."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=(n, 2)).astype(float)
    x[11] = x[3]
    return x


@pytest.mark.parametrize("block", [5, 7, 23, 64])  # 23 is not a multiple of 5 or 7
@pytest.mark.parametrize("max_band_bytes", [8 * 23 * 2, 2**28])  # 2-row bands, whole chunks
def test_nearest_neighbors_equals_brute_force(tmp_path, block, max_band_bytes):
    x = _points_with_ties()
    D = cdist(x, x)
    st = _store_with_matrix(tmp_path, D, block=block)
    idx, dist = nearest_neighbors(st, descriptor="ps", k=4, max_band_bytes=max_band_bytes)
    want_idx, want_dist = _brute_force(D, 4)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(dist, want_dist)
    assert idx.dtype == np.int64 and idx.shape == (23, 4)
    assert 11 in idx[3] and dist[3, 0] == 0  # the duplicate is a neighbour, itself is not
    assert not (idx == np.arange(23)[:, None]).any()


def test_nearest_neighbors_reads_a_store_path_and_tile_level(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(17, 3))
    D = cdist(x, x)
    _store_with_matrix(tmp_path, D, block=4, level="tile")
    idx, dist = nearest_neighbors(tmp_path / "st", descriptor="ps", level="tile", k=16)
    want_idx, want_dist = _brute_force(D, 16)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist)


def test_planted_outlier_has_the_top_score(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5))
    x[17] += 50.0  # far from everything
    D = cdist(x, x)
    _, dist = nearest_neighbors(_store_with_matrix(tmp_path, D, block=8), descriptor="ps")
    score = outlier_scores(dist)
    assert dist.shape == (40, 5)  # k = 5 by default
    assert int(np.argmax(score)) == 17
    np.testing.assert_array_equal(score, _brute_force(D, 5)[1][:, -1])


def test_nan_distances_are_never_neighbours(tmp_path):
    x = np.arange(6, dtype=float)[:, None]
    D = cdist(x, x)
    D[0, 1] = D[1, 0] = np.nan
    idx, _ = nearest_neighbors(_store_with_matrix(tmp_path, D, block=4), descriptor="ps", k=2)
    assert 1 not in idx[0] and 0 not in idx[1]


def test_neighbor_errors(tmp_path):
    x = np.arange(5, dtype=float)[:, None]
    st = _store_with_matrix(tmp_path, cdist(x, x), block=2)
    with pytest.raises(ValueError, match=r"'k' parameter must be an int in \[1, 4\]"):
        nearest_neighbors(st, descriptor="ps", k=5)
    with pytest.raises(ValueError, match="'k' parameter"):
        nearest_neighbors(st, descriptor="ps", k=0)
    with pytest.raises(ValueError, match="'max_band_bytes' parameter must be a positive"):
        nearest_neighbors(st, descriptor="ps", k=2, max_band_bytes=0)
    with pytest.raises(store.StoreError, match="run the distance stage"):
        nearest_neighbors(st, descriptor="cnn")
    with pytest.raises(ValueError, match="'level' parameter must be one of"):
        nearest_neighbors(st, descriptor="ps", level="pixel")
    with pytest.raises(ValueError, match="must be \\(n, k\\)"):
        outlier_scores(np.zeros(3))


def test_clusters_recover_separated_blobs():
    rng = np.random.default_rng(3)
    centres = [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)]
    sizes = [40, 30, 25, 20]
    x = np.concatenate([rng.normal(c, 0.5, (s, 3)) for c, s in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(4), sizes)
    labels = clusters(x)
    assert labels.dtype == np.int64
    assert adjusted_rand_score(truth, labels) > 0.95
    assert set(labels) - {-1} == {0, 1, 2, 3}
    assert (labels[:40] == 0).mean() > 0.9  # numbered by decreasing size
    np.testing.assert_array_equal(clusters(x), labels)  # deterministic


def test_clusters_call_a_far_point_noise():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(8, 0.3, (30, 2)), [[40, -40]]])
    labels = clusters(x)
    assert labels[-1] == -1
    assert adjusted_rand_score(np.repeat([0, 1], 30), labels[:-1]) == 1.0


def test_clusters_small_and_invalid_input():
    np.testing.assert_array_equal(clusters(np.zeros((2, 2))), [-1, -1])
    with pytest.raises(ValueError, match="'min_cluster_size' parameter must be an int >= 2"):
        clusters(np.zeros((10, 2)), min_cluster_size=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        clusters(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match=r"must be \(n, D\)"):
        clusters(np.zeros(10))
