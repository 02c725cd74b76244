"""Memory of the distances stage: block reader and read-ahead, scratch buffers, the automatic
block size, the tile-level centre.
"""

import shutil

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale import store as st
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_block_reader_gives_every_block_in_order_from_a_few_reused_buffers(ahead):
    """The kernel's pattern: a row block held across column blocks, each given back."""
    data = np.arange(40.0).reshape(20, 2)
    ranges = [(0, 4), (4, 8), (8, 12), (4, 8), (8, 12), (16, 20), (12, 15)]
    reads = []

    def read_into(r, out):
        reads.append(r)
        out[:] = data[r[0] : r[1]]

    buffers = set()
    with dist._BlockReader(read_into, ranges, width=2, dtype=np.float64, ahead=ahead) as reader:
        row = reader.take()  # held, like a row block
        np.testing.assert_array_equal(row, data[0:4])
        for a, b in ranges[1:]:
            block = reader.take()
            np.testing.assert_array_equal(block, data[a:b])
            buffers.add(block.__array_interface__["data"][0])
            reader.give_back(block)
    assert reads == ranges
    assert len(buffers) <= 1 + ahead  # the column blocks cycle through the spare buffers


def test_distance_tasks_give_the_same_matrix_with_and_without_read_ahead(
    tmp_path, monkeypatch, fake_weights
):
    root = _make(tmp_path / "st", _images(9, seed=4))  # 9 images, 9-27 tiles
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    X = st.read_rows(st.open_store(root), "features/cnn").astype(np.float64)
    out = {}
    for ahead in (0, 2):
        monkeypatch.setattr(dist, "READ_AHEAD", ahead)
        st.open_store(root).clear_done("tile_distances.cnn")
        dist.run_distances(root, level="tile", block_size=4)  # n is not a multiple of 4
        out[ahead] = st.read_rows(st.open_store(root), "tile_distances/cnn")
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[0], cdist(X, X), rtol=1e-6, atol=1e-9)


def test_block_reads_follow_the_kernel_order():
    pairs = [runner.BlockPair(i, j, (4 * i, 4 * i + 4), (4 * j, 4 * j + 4)) for i, j in
             [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]]  # fmt: skip
    # block 2, held for (0, 2), is kept for (1, 2): block 1 is read again for (1, 1)
    assert dist._block_reads(pairs) == [(0, 4), (4, 8), (8, 12), (4, 8)]


def test_distance_tasks_reuse_the_threads_buffers_and_the_stage_releases_them(
    tmp_path, fake_weights
):
    """Block buffers and kernel scratch outlive a task (no fresh pages for the next one)
    and are all freed when run_distances ends."""
    from microscale import scratch

    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    dist.run_distances(root, level="tile", block_size=4)
    assert scratch.held_bytes() == 0
    expected = st.read_rows(st.open_store(root), "tile_distances/cnn")
    store = st.open_store(root)
    store.clear_done("tile_distances.cnn")
    groups = [  # groups of full blocks only: the same buffer sizes
        g for g in dist._group_pairs(dist.plan_distance_blocks(store, level="tile"), 2)
        if all(p.rows[1] - p.rows[0] == p.cols[1] - p.cols[0] == 4 for p in g)
    ]  # fmt: skip
    assert len(groups) >= 3
    held = []
    for group in groups[:2]:
        dist.compute_distance_blocks(root, group, level="tile", device="cpu")
        held.append(scratch.held_bytes())
    block = scratch.buffer("distance.block.0", (4, 2080), np.float32)
    dist.compute_distance_blocks(root, groups[2], level="tile", device="cpu")
    assert held[0] > 2 * 4 * 2080 * 4 and held[1] == held[0] == scratch.held_bytes()
    assert np.shares_memory(block, scratch.buffer("distance.block.0", (4, 2080), np.float32))
    dist.run_distances(root, level="tile", block_size=4)
    assert scratch.held_bytes() == 0
    np.testing.assert_array_equal(st.read_rows(st.open_store(root), "tile_distances/cnn"), expected)


@pytest.mark.slow
def test_distance_stage_releases_the_workers_scratch(tmp_path, fake_weights):
    from microscale import scratch
    from microscale.cluster import cluster_client

    root = _make(tmp_path / "st", _images(6, seed=5))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    with cluster_client(processes=True, n_workers=1, threads_per_worker=1) as client:
        dist.run_distances(root, level="tile", block_size=4, client=client)
        assert set(client.run(scratch.held_bytes).values()) == {0}
        store = st.open_store(root)
        store.clear_done("tile_distances.cnn")
        group = dist._group_pairs(dist.plan_distance_blocks(store, level="tile"), 2)[0]
        client.submit(dist.compute_distance_blocks, root, group, level="tile").result()
        assert min(client.run(scratch.held_bytes).values()) > 0  # the control: kept


# --------------------------------------------------------------------------- block size


@pytest.mark.parametrize("d, itemsize", [(305_888, 4), (2048, 4), (1 << 15, 8)])
def test_auto_block_size_is_the_largest_that_fits(d, itemsize):
    for memory in (1e8, 5e8, 1e9, 2e9, 4e9, 7e9, 8e9, 64e9):
        b = dist.auto_block_size(d, memory, itemsize=itemsize)
        budget = dist.BLOCK_MEMORY_FRACTION * memory
        larger = [s for s in dist.AUTO_BLOCK_SIZES if s > b]
        fits = dist.distance_task_bytes(b, d, itemsize) <= budget
        assert fits or b == dist.AUTO_BLOCK_SIZES[-1]
        assert all(dist.distance_task_bytes(s, d, itemsize) > budget for s in larger)
    assert dist.auto_block_size(305_888, 8e9) == 1024  # 3.2 GB tasks, measured
    assert dist.auto_block_size(305_888, 2e9) == 256


def test_task_memory_is_the_smallest_workers_share_per_thread():
    class Client:
        def scheduler_info(self, n_workers):
            assert n_workers == -1  # every worker, not the first few
            return {"workers": {
                "a": {"memory_limit": 8e9, "nthreads": 2},
                "b": {"memory_limit": 6e9, "nthreads": 1},
                "c": {"memory_limit": 0, "nthreads": 4},  # no limit: not a constraint
            }}  # fmt: skip

    assert dist._task_memory(Client()) == 4e9


def test_a_new_matrix_gets_the_automatic_block_size_and_keeps_it(
    tmp_path, monkeypatch, fake_weights
):
    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    d = 2080
    memory = 2 * dist.distance_task_bytes(6, d)  # a task of 6 rows fits, of 8 does not
    monkeypatch.setattr(dist, "AUTO_BLOCK_SIZES", (16, 8, 6, 4))
    monkeypatch.setattr(dist, "_task_memory", lambda client: memory)
    dist.run_distances(root, level="tile")
    store = st.open_store(root)
    assert st.array_chunks(store, "tile_distances/cnn") == (6, 6)
    monkeypatch.setattr(dist, "_task_memory", lambda client: 1e12)  # more memory later:
    assert dist.run_distances(root, level="tile").computed == 0  # the stored blocks stay
    assert st.array_chunks(store, "tile_distances/cnn") == (6, 6)
    X = st.read_rows(store, "features/cnn").astype(np.float64)
    np.testing.assert_allclose(
        st.read_rows(store, "tile_distances/cnn"), cdist(X, X), rtol=1e-6, atol=1e-9
    )


def test_tile_level_centre_comes_from_the_image_sums_without_a_pass(
    tmp_path, monkeypatch, fake_weights
):
    """Texture vectors with image features done: no centre pass over the tiles, and the
    distances are exact all the same (any common centre gives them)."""
    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    store = st.open_store(root)
    X = st.read_rows(store, "features/cnn").astype(np.float64)
    centre_reads, inside = [], []
    real_read, real_centre = dist.read_rows, dist._ensure_center

    def read_spy(s, name, *args, **kwargs):
        if inside:
            centre_reads.append(name)
        return real_read(s, name, *args, **kwargs)

    def centre_spy(*args, **kwargs):
        inside.append(True)
        try:
            return real_centre(*args, **kwargs)
        finally:
            inside.clear()

    monkeypatch.setattr(dist, "read_rows", read_spy)
    monkeypatch.setattr(dist, "_ensure_center", centre_spy)
    dist.run_distances(root, level="tile", block_size=4)  # no image features: a pass
    assert centre_reads == ["features/cnn"] * len(range(0, store.n_tiles, 5))
    np.testing.assert_allclose(st.read_array(store, "tile_center/cnn"), X.mean(axis=0))
    imf.image_features(root, descriptor="cnn", images_per_task=4)
    store.clear_done("tile_distances.cnn")
    shutil.rmtree(root / st.GROUP_NAME / "tile_center")
    centre_reads.clear()
    dist.run_distances(root, level="tile", block_size=4)
    assert set(centre_reads) == {"image_feature_sums/cnn"}  # no tile rows read
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    np.testing.assert_allclose(st.read_array(store, "tile_center/cnn"), F.mean(axis=0))
    D = st.read_rows(store, "tile_distances/cnn")
    np.testing.assert_allclose(D, cdist(X, X), rtol=1e-6, atol=1e-9)
