"""The 'landmarks' distance mode: (n, m) distances to landmarks chosen once per store."""

import numpy as np
import pytest

from microscale import store as st
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.stages import landmarks as lm
from microscale.store import StoreError
from microscale.testing.stores import fill, make, random_images


def _ready(root):
    """Power spectra (float64, d = 256: fast) and their image means, like the pipeline."""
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=4)
    return root


def _full_matrix(tmp_path, images, name="full"):
    root = _ready(make(tmp_path / name, images))
    dist.run_distances(root, descriptor="ps", block_size=6, device="cpu")
    return st.read_rows(st.open_store(root), "distances/ps")


@pytest.mark.parametrize("block", [5, 7, 40])  # 23 images: partial last blocks, one block
def test_landmark_distances_are_the_full_matrix_columns(tmp_path, block):
    images = random_images(23, seed=0, max_tiles=2)
    images[11] = images[3]  # an exact duplicate
    D = _full_matrix(tmp_path, images)
    root = _ready(make(tmp_path / "lm", images))
    counts = lm.run_landmark_distances(root, descriptor="ps", n_landmarks=6, block_size=block,
                                       device="cpu")  # fmt: skip
    store = st.open_store(root)
    idx = st.read_array(store, "landmarks/ps")
    L = st.read_rows(store, "landmark_distances/ps")
    assert counts.computed == len(range(0, 23, block)) and counts.skipped == 0
    assert L.shape == (23, 6) and st.array_chunks(store, "landmark_distances/ps") == (block, 6)
    # the same exact kernel: equal within its 1e-6 bound (the blocks differ, not the method)
    np.testing.assert_allclose(L, D[:, idx], rtol=1e-6, atol=0)
    assert (L[idx, np.arange(6)] == 0).all()  # a landmark is at distance 0 of itself
    np.testing.assert_array_equal(
        st.read_array(store, "landmark_vectors/ps"), st.read_rows(store, "image_features/ps")[idx]
    )
    assert not st.has_array(store, "distances/ps")  # the n x n matrix is never made


def test_landmarks_are_recorded_once_and_a_grown_store_computes_only_new_rows(tmp_path):
    old, new = random_images(17, seed=1, max_tiles=1), random_images(9, seed=2, max_tiles=1)
    root = _ready(make(tmp_path / "g", old))
    first = lm.run_landmark_distances(root, descriptor="ps", n_landmarks=5, block_size=5,
                                      device="cpu", random_state=3)  # fmt: skip
    store = st.open_store(root)
    idx = st.read_array(store, "landmarks/ps")
    assert first.computed == 4
    assert st.array_attrs(store, "landmarks/ps") == {
        "method": "random", "random_state": 3, "requested": 5, "n_rows": 17,
    }  # fmt: skip
    again = lm.run_landmark_distances(root, descriptor="ps", n_landmarks=5, device="cpu",
                                      random_state=3)  # fmt: skip
    assert (again.computed, again.skipped) == (0, 4)
    fill(store, new)
    _ready(root)
    grown = lm.run_landmark_distances(root, descriptor="ps", n_landmarks=5, device="cpu",
                                      random_state=3)  # fmt: skip
    # rows 15:17 of the partial last block, and the new rows 17:26: 3 blocks of 6
    assert (grown.computed, grown.skipped) == (3, 3)
    store = st.open_store(root)
    np.testing.assert_array_equal(st.read_array(store, "landmarks/ps"), idx)  # kept
    D = _full_matrix(tmp_path, old + new)
    np.testing.assert_allclose(
        st.read_rows(store, "landmark_distances/ps"), D[:, idx], rtol=1e-6, atol=0
    )


def test_landmarks_capped_by_a_small_archive_are_chosen_again_when_it_grows(tmp_path):
    root = _ready(make(tmp_path / "g", random_images(4, seed=4, max_tiles=1)))
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=6, device="cpu")
    assert len(st.read_array(st.open_store(root), "landmarks/ps")) == 4
    fill(st.open_store(root), random_images(5, seed=5, max_tiles=1))
    _ready(root)
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=6, device="cpu")
    store = st.open_store(root)
    idx = st.read_array(store, "landmarks/ps")
    assert len(idx) == 6 and st.array_shape(store, "landmark_distances/ps") == (9, 6)
    assert np.isfinite(st.read_rows(store, "landmark_distances/ps")).all()


def test_other_landmark_settings_are_refused_with_the_way_out(tmp_path):
    root = _ready(make(tmp_path / "s", random_images(9, seed=6, max_tiles=1)))
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=4, device="cpu")
    with pytest.raises(StoreError, match=r"chosen with .*method.*delete 'landmarks/ps'"):
        lm.run_landmark_distances(root, descriptor="ps", n_landmarks=4, method="maxmin",
                                  device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="'method' parameter"):
        lm.choose_store_landmarks(root, descriptor="ps", method="farthest")


def test_maxmin_landmarks_come_from_a_bounded_pool_and_spread_out(tmp_path):
    images = random_images(30, seed=7, max_tiles=1)
    root = _ready(make(tmp_path / "s", images))
    dist.ensure_center(st.open_store(root), "ps")
    # a pool of 12 rows of 256 float64: 12 * 2048 bytes
    idx = lm.choose_store_landmarks(root, descriptor="ps", n_landmarks=5, method="maxmin",
                                    pool_bytes=12 * 256 * 8, device="cpu")  # fmt: skip
    assert len(set(idx.tolist())) == 5 and idx.max() < 30
    D = _full_matrix(tmp_path, images)
    pool = np.sort(np.random.default_rng(0).choice(30, size=12, replace=False))
    assert set(idx.tolist()) <= set(pool.tolist())
    # farthest point: each landmark is the pool row farthest from the ones before it
    for j in range(1, 5):
        nearest = D[np.ix_(pool, idx[:j])].min(axis=1)
        assert D[idx[j], idx[:j]].min() == pytest.approx(nearest.max(), rel=1e-6)
