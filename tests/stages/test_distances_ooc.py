"""The out-of-core distance stage: the in-memory kernel's matrix bit for bit, each shared block
read once, and a stage killed mid-way resumes to the same matrix."""

from __future__ import annotations

import numpy as np
import pytest

from microscale import store as st
from microscale.distance import pairwise_distances
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf


def _feature_store(root, X, *, chunk=3):
    """One tile per image whose cnn features are the rows of ``X``, done and recorded."""
    n, d = X.shape
    store = st.create_store(root, tile_size=4, tiles_per_chunk=8, features_chunk=chunk)
    st.append_tiles(store, np.full((n, 4, 4), 0.5, np.float32), image_index=np.arange(n),
                    origins=np.zeros((n, 2), int), weights=np.ones(n))  # fmt: skip
    ids = [f"img{i:04d}" for i in range(n)]
    st.append_images(store, image_ids=ids, paths=[f"/a/{i}.png" for i in ids])
    st.ensure_features_array(store, "features/cnn", d, n_rows=n, chunk_rows=chunk)
    for batch in feat.plan_feature_batches(store, descriptor="cnn"):
        rows = (batch.start, batch.stop)
        st.write_block(store, "features/cnn", X[batch.start : batch.stop], rows=rows)
        store.mark_done("features.cnn", batch.key, batch.extent, covers=[("features/cnn", rows)])
    imf.image_features(root, descriptor="cnn", images_per_task=4)
    return store


def _rows(n, d, seed=0):
    """Rows whose float64 sums are exact (eighths), so the stage's centre (from the image
    sums) and the in-memory one (the mean of the rows) are the same number; with a
    duplicate and a near-duplicate, so the kernel's fallbacks run too."""
    rng = np.random.default_rng(seed)
    X = (rng.integers(0, 64, (n, d)) / 8 + 1).astype(np.float32)
    X[5] = X[2]
    X[9] = X[4]
    X[9, 0] += 0.125
    return X


@pytest.mark.parametrize("d", [40, 20_000])  # float32 GEMMs: one panel, and many
def test_stage_equals_the_in_memory_kernel_exactly(tmp_path, d):
    X = _rows(23, d)  # blocks of 8: a partial last block
    _feature_store(tmp_path / "s", X)
    counts = dist.run_distances(tmp_path / "s", block_size=8, pairs_per_task=4)
    assert counts == runner.StageCounts(computed=6, skipped=0)
    D = st.read_rows(st.open_store(tmp_path / "s"), "distances/cnn")
    np.testing.assert_array_equal(D, pairwise_distances(X, block_size=8, device="cpu"))
    assert D[2, 5] == 0.0 and D[4, 9] > 0.0


def test_a_shared_block_is_read_once_and_the_diagonal_reads_none(tmp_path, monkeypatch):
    X = _rows(32, 40)
    _feature_store(tmp_path / "s", X)
    reads = []
    read_rows = dist.read_rows

    def counted(store, name, start, stop, **kwargs):
        if name == "image_features/cnn":
            reads.append((start, stop))
        return read_rows(store, name, start, stop, **kwargs)

    monkeypatch.setattr(dist, "read_rows", counted)
    dist.run_distances(tmp_path / "s", block_size=8, pairs_per_task=10)  # 4 blocks, one task
    # the snake (0,0) (0,3) (0,2) (0,1) (1,1) (1,3) (1,2) (2,2) (2,3) (3,3): 7 reads, not 10
    assert reads == [(0, 8), (24, 32), (16, 24), (8, 16), (24, 32), (16, 24), (24, 32)]
    D = st.read_rows(st.open_store(tmp_path / "s"), "distances/cnn")
    np.testing.assert_array_equal(D, pairwise_distances(X, block_size=8, device="cpu"))


def test_a_stage_killed_mid_task_resumes_to_the_same_matrix(tmp_path, monkeypatch):
    X = _rows(40, 40)
    _feature_store(tmp_path / "s", X)
    reference = pairwise_distances(X, block_size=8, device="cpu")
    write_block = dist.write_block
    calls = []

    def crash_on_seventh(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 7:
            raise RuntimeError("worker lost (simulated crash)")
        return write_block(*args, **kwargs)

    monkeypatch.setattr(dist, "write_block", crash_on_seventh)
    with pytest.raises(RuntimeError, match="simulated crash"):
        dist.run_distances(tmp_path / "s", block_size=8, pairs_per_task=4)
    monkeypatch.setattr(dist, "write_block", write_block)
    store = st.open_store(tmp_path / "s")
    done = sorted(store.records("distances.cnn"))
    # the snake's first task: (0,0), (0,4), (0,3) written and recorded; (0,2) written, and
    # the crash hit its transpose: no record
    assert done == ["000000-000000", "000000-000003", "000000-000004"]
    counts = dist.run_distances(tmp_path / "s", block_size=8, pairs_per_task=4)
    assert counts == runner.StageCounts(computed=12, skipped=3)
    np.testing.assert_array_equal(st.read_rows(store, "distances/cnn"), reference)


def test_tasks_read_ahead_only_where_a_third_block_fits(tmp_path, monkeypatch):
    X = _rows(24, 40)
    _feature_store(tmp_path / "s", X)
    asked = []
    compute = dist.compute_distance_blocks

    def spy(root, pairs, **kwargs):
        asked.append(kwargs["read_ahead"])
        return compute(root, pairs, **kwargs)

    monkeypatch.setattr(dist, "compute_distance_blocks", spy)
    third = dist.distance_task_bytes(8, 40, 4, blocks=3) / dist.BLOCK_MEMORY_FRACTION
    # None: the task's device decides (1 on a GPU, 0 on a CPU); 0: no room for a third block
    for memory, setting, want in [(third, None, None), (third - 1, None, 0), (third, 0, 0),
                                  (third - 1, 2, 2)]:  # fmt: skip
        monkeypatch.setattr(dist, "_task_memory", lambda client, m=memory: m)
        monkeypatch.setattr(dist, "READ_AHEAD", setting)
        st.open_store(tmp_path / "s").clear_done("distances.cnn")
        asked.clear()
        dist.run_distances(tmp_path / "s", block_size=8, pairs_per_task=2)
        assert asked == [want] * 3
    D = st.read_rows(st.open_store(tmp_path / "s"), "distances/cnn")
    np.testing.assert_array_equal(D, pairwise_distances(X, block_size=8, device="cpu"))
