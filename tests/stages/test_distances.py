"""The distances stage (stages/distances.py) out of core, against scipy's cdist; growth and
resume.
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale import store as st
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import fill as _fill
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER, all_stages, fit

# --------------------------------------------------------------------------- distances


def test_out_of_core_distances_equal_cdist(tmp_path):
    images = _images(23, seed=9)  # 23 images in blocks of 5: a partial last block
    root = _make(tmp_path / "s", images)
    counts = all_stages(root)
    assert counts["distances"] == runner.StageCounts(computed=15, skipped=0)
    store = st.open_store(root)
    F = st.read_rows(store, "image_features/ps")
    D = st.read_rows(store, "distances/ps")
    np.testing.assert_allclose(D, cdist(F, F), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(D, D.T)  # exactly symmetric
    assert (np.diag(D) == 0).all() and np.isfinite(D).all()
    np.testing.assert_allclose(st.read_array(store, "center/ps"), F.mean(axis=0), rtol=1e-12)


def test_float32_texture_distances_equal_cdist(tmp_path, fake_weights):
    images = _images(12, seed=10, max_tiles=2)
    root = _make(tmp_path / "s", images)
    all_stages(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    store = st.open_store(root)
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    D = st.read_rows(store, "distances/cnn")
    np.testing.assert_allclose(D, cdist(F, F), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(D, D.T)


def test_growing_archive_computes_only_new_work(tmp_path):
    old, new = _images(13, seed=11), _images(10, seed=12)
    root = _make(tmp_path / "grown", old)
    all_stages(root)
    first = emb.embed(root, descriptor="ps", n_components=[2])
    n_old_tiles = st.open_store(root).n_tiles
    _fill(st.open_store(root), new)
    n_tiles = st.open_store(root).n_tiles

    counts = all_stages(root)
    chunks = lambda n: -(-n // 5)  # noqa: E731
    stale = int(n_old_tiles % 5 != 0)  # the old partial feature chunk grew
    assert counts["features"].computed == chunks(n_tiles) - chunks(n_old_tiles) + stale
    assert counts["features"].skipped == chunks(n_old_tiles) - stale
    # images 0..12 in groups of 4: group 3 (image 12) grew; groups 4, 5 are new.
    assert counts["images"] == runner.StageCounts(computed=3, skipped=3)
    # blocks of 5: old block 2 (images 10..12) grew to 10..14, so pairs (0,2), (1,2), (2,2)
    # are stale; pairs with blocks 3 and 4 are new: 12 computed, (0,0), (0,1), (1,1) kept.
    assert counts["distances"] == runner.StageCounts(computed=12, skipped=3)

    clean = _make(tmp_path / "clean", old + new)
    all_stages(clean)
    a, b = st.open_store(root), st.open_store(clean)
    for name in ("features/ps", "image_features/ps"):
        np.testing.assert_array_equal(st.read_rows(a, name), st.read_rows(b, name))
    # Old blocks used the old centre: equal to the kernel's precision, not bit for bit.
    np.testing.assert_allclose(
        st.read_rows(a, "distances/ps"), st.read_rows(b, "distances/ps"), rtol=1e-9
    )

    grown = emb.embed(root, descriptor="ps", n_components=[2])
    D = st.read_rows(a, "distances/ps")
    fresh = fit(D, 2, device="cpu")[1].stress
    assert grown["stress"][2] <= fresh + 1e-12
    # Rotated onto the previous map: the old points stay close to where they were.
    moved = np.linalg.norm(grown["embeddings"][2][:13] - first["embeddings"][2], axis=1)
    assert np.median(moved) < 0.5 * np.linalg.norm(first["embeddings"][2], axis=1).mean()


def test_resume_computes_exactly_the_missing_work(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(14, seed=13))
    calls = []

    def crash_on_third(batch_size):
        calls.append(batch_size)
        if len(calls) == 3:
            raise RuntimeError("worker lost (simulated crash)")

    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    with pytest.raises(RuntimeError, match="simulated crash"):
        feat.run_features(root, oom_hook=crash_on_third, **kwargs)
    n_batches = -(-st.open_store(root).n_tiles // 5)
    assert feat.run_features(root, **kwargs) == runner.StageCounts(
        computed=n_batches - 2, skipped=2
    )

    imf.image_features(root, descriptor="cnn")
    dist.run_distances(root, descriptor="cnn", block_size=4)
    store = st.open_store(root)
    reference = st.read_rows(store, "distances/cnn")
    # Lose three block pairs: their records and their data (as if never written).
    lost = ["000000-000001", "000001-000003", "000002-000002"]
    for key in lost:
        store.clear_done("distances.cnn", key)
    st.write_block(store, "distances/cnn", np.full((4, 2), np.nan), rows=(4, 8), cols=(12, 14))
    counts = dist.run_distances(root, descriptor="cnn", block_size=4)
    assert counts == runner.StageCounts(computed=3, skipped=7)
    np.testing.assert_array_equal(st.read_rows(store, "distances/cnn"), reference)
