"""Exact k nearest neighbours streamed past each row block: the full path's, without it."""

import numpy as np
import pytest

from microscale import store as st
from microscale.neighbors import nearest_neighbors, stored_neighbors
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.stages import knn
from microscale.testing.stores import fill, make, random_images


def _ready(root):
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=4)
    return root


def _with_ties(n, seed):
    """n images; 11 and 17 duplicate 3 (distance 0: ties among them, broken by index)."""
    images = random_images(n, seed=seed, max_tiles=2)
    images[11] = images[17] = images[3]
    return images


def _full_neighbors(tmp_path, images, k, *, block=6, name="full"):
    root = _ready(make(tmp_path / name, images))
    dist.run_distances(root, descriptor="ps", block_size=block, device="cpu")
    return nearest_neighbors(root, descriptor="ps", k=k)


def _canonical(idx, d):
    """Rows re-sorted by (distance to 9 significant digits, index): equal distances that
    two computations round differently (a duplicate's twins seen from a third image)
    are then ordered by index in both."""
    key = np.array([[float(f"{v:.9g}") for v in row] for row in d])
    order = np.lexsort((idx, key), axis=1)
    return np.take_along_axis(idx, order, axis=1)


@pytest.mark.parametrize("block", [4, 7, 64])  # 25 rows: partial blocks, a single block
def test_streamed_neighbors_equal_the_full_matrix_path(tmp_path, block):
    images = _with_ties(25, seed=0)
    want_idx, want_dist = _full_neighbors(tmp_path, images, 6, block=block)
    root = _ready(make(tmp_path / "s", images))
    counts = knn.run_neighbors(root, descriptor="ps", k=6, block_size=block, device="cpu")
    idx, d = stored_neighbors(root, descriptor="ps", k=6)
    assert counts.computed == len(range(0, 25, block))
    assert not st.has_array(st.open_store(root), "neighbors/ps/partial_index")  # transient
    # each pair through the kernel as the full matrix computes it: the same bits, the
    # same order, ties (3, 11 and 17 seen from any image) to the lower index
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(d, want_dist)
    assert list(idx[3, :2]) == [11, 17] and list(idx[17, :2]) == [3, 11]  # the duplicates
    assert d[3, 0] == d[3, 1] == 0
    assert not (idx == np.arange(25)[:, None]).any()  # never itself
    store = st.open_store(root)
    assert not st.has_array(store, "distances/ps")
    assert st.array_chunks(store, "neighbors/ps/index") == (block, 6)
    # fewer neighbours are the first columns of the stored ones
    np.testing.assert_array_equal(stored_neighbors(root, descriptor="ps", k=2)[0], idx[:, :2])
    with pytest.raises(ValueError, match=r"keeps 6 neighbours.*larger k"):
        stored_neighbors(root, descriptor="ps", k=7)


def test_a_grown_store_updates_old_rows_and_equals_a_fresh_one(tmp_path):
    old, new = _with_ties(18, seed=1), random_images(9, seed=2, max_tiles=1)
    new[4] = old[5]  # a new image that enters an old image's top k (distance 0)
    root = _ready(make(tmp_path / "g", old))
    assert knn.run_neighbors(root, descriptor="ps", k=4, block_size=5, device="cpu").computed == 4
    before = stored_neighbors(root, descriptor="ps", k=4)[0]
    fill(st.open_store(root), new)
    _ready(root)
    seen = []
    counts = knn.run_neighbors(root, descriptor="ps", k=4, device="cpu",
                               on_done=lambda done, total: seen.append(total))  # fmt: skip
    # every old block is updated (the new images may enter their lists), plus the new ones
    assert (counts.computed, counts.skipped) == (6, 0)
    # only block pairs that meet a new row (18:27, blocks 3-5 of 5 rows) are computed:
    # blocks 0-2 against 3-5, block 3 (new rows 18:20) against 3-5, 4 against 4-5, 5 itself
    assert seen[-1] == 3 * 3 + 3 + 2 + 1 < 6 * 7 // 2
    idx, d = stored_neighbors(root, descriptor="ps", k=4)
    fresh = _ready(make(tmp_path / "fresh", old + new))
    knn.run_neighbors(fresh, descriptor="ps", k=4, block_size=5, device="cpu")
    fresh_idx, fresh_dist = stored_neighbors(fresh, descriptor="ps", k=4)
    # the old rows' distances were computed with the old centre: the same to rounding
    np.testing.assert_allclose(d, fresh_dist, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(_canonical(idx, d), _canonical(fresh_idx, fresh_dist))
    want_idx, want_dist = _full_neighbors(tmp_path, old + new, 4, block=5)
    np.testing.assert_array_equal(_canonical(idx, d), _canonical(want_idx, want_dist))
    assert idx[5, 0] == 18 + 4 and before[5, 0] != 18 + 4  # the new duplicate came in
    assert knn.run_neighbors(root, descriptor="ps", k=4, device="cpu").computed == 0


def test_a_chunk_written_past_its_record_is_recomputed(tmp_path):
    """A task killed between its chunk write and its record: the chunk is newer."""
    old, new = random_images(10, seed=3, max_tiles=1), random_images(6, seed=4, max_tiles=1)
    new[0] = old[2]
    root = _ready(make(tmp_path / "g", old))
    knn.run_neighbors(root, descriptor="ps", k=3, block_size=5, device="cpu")
    store = st.open_store(root)
    stale = store.done_keys("neighbors.ps")
    fill(store, new)
    _ready(root)
    knn.run_neighbors(root, descriptor="ps", k=3, device="cpu")
    for key, extent in stale.items():  # put the old records back: "killed before them"
        store.mark_done("neighbors.ps", key, extent)
    knn.run_neighbors(root, descriptor="ps", k=3, device="cpu")
    want_idx, want_dist = _full_neighbors(tmp_path, old + new, 3, block=5)
    idx, d = stored_neighbors(root, descriptor="ps", k=3)
    np.testing.assert_array_equal(_canonical(idx, d), _canonical(want_idx, want_dist))


def test_k_is_capped_by_a_small_archive_and_grows_with_it(tmp_path):
    root = _ready(make(tmp_path / "g", random_images(3, seed=5, max_tiles=1)))
    knn.run_neighbors(root, descriptor="ps", k=5, device="cpu")
    assert st.array_shape(st.open_store(root), "neighbors/ps/index") == (3, 2)
    fill(st.open_store(root), random_images(6, seed=6, max_tiles=1))
    _ready(root)
    knn.run_neighbors(root, descriptor="ps", k=5, device="cpu")
    assert st.array_attrs(st.open_store(root), "neighbors/ps/index")["k"] == 5
    idx, _ = stored_neighbors(root, descriptor="ps", k=5)
    assert idx.shape == (9, 5) and (idx >= 0).all()


def test_one_row_has_no_neighbours(tmp_path):
    root = _ready(make(tmp_path / "g", random_images(1, seed=7, max_tiles=1)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        knn.run_neighbors(root, descriptor="ps", device="cpu")
