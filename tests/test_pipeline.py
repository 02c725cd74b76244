"""The archive stages through the store, against in-memory oracles."""

import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from microscale import store as st
from microscale.cluster import cluster_client
from microscale.metric_mds import mds_with_info
from microscale.spectrum import power_spectra
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import IncompleteStageError, StoreError
from microscale.testing.stores import S
from microscale.testing.stores import fill as _fill
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from microscale.texture import texture_vectors


def _fit(D, n_components, **kwargs):
    """(embedding, info) of one dimension, or ({k: X}, {k: info}) of several."""
    fit = mds_with_info(D, n_components, **kwargs)
    if isinstance(n_components, int):
        return fit.embeddings[n_components], fit.info[n_components]
    return fit.embeddings, fit.info


ONE_LAYER = ("conv1_1",)  # 2080 features: fast fake-weights tests


def _all_stages(root, *, descriptor="ps", block_size=5, client=None, **features):
    counts = {
        "features": feat.run_features(root, descriptor=descriptor, client=client, **features),
        "images": imf.image_features(root, descriptor=descriptor, client=client, images_per_task=4),
        "distances": dist.run_distances(
            root, descriptor=descriptor, client=client, block_size=block_size
        ),
    }
    return counts


def _weighted_means(features, images):
    out, start = [], 0
    for tiles, weights in images:
        f = features[start : start + len(tiles)].astype(np.float64)
        out.append(weights @ f / weights.sum())
        start += len(tiles)
    return np.array(out)


# --------------------------------------------------------------------------- features


def test_power_spectra_through_the_store_equal_in_memory(tmp_path):
    images = _images(9, seed=1)
    root = _make(tmp_path / "s", images)
    counts = feat.run_features(root, descriptor="ps")
    tiles = np.concatenate([t for t, _ in images])
    assert counts == runner.StageCounts(computed=-(-len(tiles) // 5), skipped=0)
    store = st.open_store(root)
    np.testing.assert_array_equal(st.read_rows(store, "features/ps"), power_spectra(tiles))
    assert feat.run_features(root, descriptor="ps").computed == 0  # nothing left to do


def test_texture_vectors_through_the_store_equal_in_memory(tmp_path, fake_weights):
    images = _images(6, seed=2)
    root = _make(tmp_path / "s", images)
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    tiles = np.concatenate([t for t, _ in images])
    expected = texture_vectors(
        tiles, weights=fake_weights, layers=ONE_LAYER, normalize=None, device="cpu"
    )
    store = st.open_store(root)
    got = st.read_rows(store, "features/cnn")
    assert got.dtype == np.float32 and got.shape == (len(tiles), 2080)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    attrs = st.array_attrs(store, "features/cnn")
    assert attrs["weights_sha256"] == fake_weights.sha256 and attrs["layers"] == ["conv1_1"]


@pytest.mark.weights
def test_real_texture_vectors_through_the_store(tmp_path, vgg_weights):
    images = _images(2, seed=3, max_tiles=2)
    root = _make(tmp_path / "s", images)
    feat.run_features(root, descriptor="cnn", weights=vgg_weights, device="cpu")
    tiles = np.concatenate([t for t, _ in images])
    expected = texture_vectors(tiles, weights=vgg_weights, normalize=None, device="cpu")
    got = st.read_rows(st.open_store(root), "features/cnn")
    assert got.shape == (len(tiles), 305888)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())


def test_out_of_memory_halves_the_forward_batch(tmp_path, fake_weights):
    images = _images(4, seed=4)
    root = _make(tmp_path / "s", images, features_chunk=64)
    sizes = []

    def small_gpu(batch_size):
        sizes.append(batch_size)
        if batch_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    (batch,) = feat.plan_feature_batches(root, descriptor="cnn")
    store = st.open_store(root)
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu",
                    batch_size=8, oom_hook=small_gpu)  # fmt: skip
    assert sizes == [8, 4, 2]
    tiles = st.read_tiles(store)
    expected = texture_vectors(tiles, weights=fake_weights, layers=ONE_LAYER, normalize=None)
    np.testing.assert_allclose(st.read_rows(store, "features/cnn"), expected, rtol=1e-6)

    def no_memory(batch_size):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError) as info:
        feat.compute_feature_batch(root, batch, descriptor="cnn", weights=fake_weights,
                                 layers=ONE_LAYER, oom_hook=no_memory)  # fmt: skip
    assert "one tile per forward pass does not fit" in "".join(info.value.__notes__)


def test_constant_tiles(tmp_path, fake_weights):
    images = _images(3, seed=5, max_tiles=1)
    flat = np.full((1, S, S), 0.5, np.float32)
    images[1] = (np.concatenate([images[1][0], flat]), np.array([100.0, 256.0]))
    root = _make(tmp_path / "s", images)
    # The spectrum rescales each tile: a flat one has none, and is left out of the mean.
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps")
    store = st.open_store(root)
    features = st.read_rows(store, "features/ps")
    assert np.isnan(features[2]).all() and np.isfinite(np.delete(features, 2, axis=0)).all()
    np.testing.assert_allclose(st.read_rows(store, "image_features/ps")[1], features[1])
    # Texture vectors of tiles normalised with their image: a flat tile counts.
    kwargs = {"weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    feat.run_features(root, descriptor="cnn", **kwargs)
    imf.image_features(root, descriptor="cnn")
    features = st.read_rows(store, "features/cnn")
    assert np.isfinite(features).all()
    np.testing.assert_allclose(
        st.read_rows(store, "image_features/cnn"), _weighted_means(features, images), rtol=1e-6
    )

    bad = _make(tmp_path / "bad", [(flat, np.array([1.0]))])
    feat.run_features(bad, descriptor="ps")
    with pytest.raises(StoreError, match="has no tile with texture"):
        imf.image_features(bad, descriptor="ps")


def test_settings_of_a_stored_descriptor_are_kept(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(2, seed=6))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    with pytest.raises(StoreError, match="other settings .*layers"):
        feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=("conv2_1",))
    with pytest.raises(ValueError, match="'descriptor' parameter must be one of"):
        feat.run_features(root, descriptor="gram")


# --------------------------------------------------------------------------- image features


def test_image_features_are_pixel_weighted_means(tmp_path):
    images = _images(11, seed=8, max_tiles=4)
    root = _make(tmp_path / "s", images, features_chunk=3)  # images straddle chunks
    feat.run_features(root, descriptor="ps")
    counts = imf.image_features(root, descriptor="ps", images_per_task=4)
    assert counts == runner.StageCounts(computed=3, skipped=0)
    store = st.open_store(root)
    tiles = st.read_rows(store, "features/ps")
    expected = _weighted_means(tiles, images)
    np.testing.assert_allclose(st.read_rows(store, "image_features/ps"), expected, rtol=1e-13)
    sums = st.read_array(store, "image_feature_sums/ps").sum(axis=0)
    np.testing.assert_allclose(sums, expected.sum(axis=0), rtol=1e-12)


# --------------------------------------------------------------------------- distances


def test_out_of_core_distances_equal_cdist(tmp_path):
    images = _images(23, seed=9)  # 23 images in blocks of 5: a partial last block
    root = _make(tmp_path / "s", images)
    counts = _all_stages(root)
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
    _all_stages(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    store = st.open_store(root)
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    D = st.read_rows(store, "distances/cnn")
    np.testing.assert_allclose(D, cdist(F, F), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(D, D.T)


def test_growing_archive_computes_only_new_work(tmp_path):
    old, new = _images(13, seed=11), _images(10, seed=12)
    root = _make(tmp_path / "grown", old)
    _all_stages(root)
    first = emb.embed(root, descriptor="ps", n_components=[2])
    n_old_tiles = st.open_store(root).n_tiles
    _fill(st.open_store(root), new)
    n_tiles = st.open_store(root).n_tiles

    counts = _all_stages(root)
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
    _all_stages(clean)
    a, b = st.open_store(root), st.open_store(clean)
    for name in ("features/ps", "image_features/ps"):
        np.testing.assert_array_equal(st.read_rows(a, name), st.read_rows(b, name))
    # Old blocks used the old centre: equal to the kernel's precision, not bit for bit.
    np.testing.assert_allclose(
        st.read_rows(a, "distances/ps"), st.read_rows(b, "distances/ps"), rtol=1e-9
    )

    grown = emb.embed(root, descriptor="ps", n_components=[2])
    D = st.read_rows(a, "distances/ps")
    fresh = _fit(D, 2, device="cpu")[1].stress
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


def test_stages_refuse_to_run_out_of_order(tmp_path):
    root = _make(tmp_path / "s", _images(5, seed=14))
    with pytest.raises(IncompleteStageError, match="run run_features"):
        imf.image_features(root, descriptor="ps")
    feat.run_features(root, descriptor="ps")
    with pytest.raises(IncompleteStageError, match=r"run image_features\(descriptor='ps'\)"):
        dist.run_distances(root, descriptor="ps")
    imf.image_features(root, descriptor="ps")
    with pytest.raises(IncompleteStageError, match="run run_distances"):
        emb.embed(root, descriptor="ps")
    dist.run_distances(root, descriptor="ps", block_size=2)
    with pytest.raises(StoreError, match="stored in blocks of 2; pass block_size=2"):
        dist.run_distances(root, descriptor="ps", block_size=3)
    st.open_store(root).clear_done("distances.ps", "000000-000001")
    with pytest.raises(IncompleteStageError, match="1 unit.* distances.ps stage are not done"):
        emb.embed(root, descriptor="ps")


def test_a_stage_waits_for_no_one_while_another_run_holds_the_lock(tmp_path):
    import subprocess
    import sys
    import textwrap

    root = _make(tmp_path / "s", _images(3, seed=15))
    code = textwrap.dedent(
        f"""
        from microscale import pipeline
        from microscale.store import StoreLockedError
        try:
            pipeline.run_features({str(root)!r}, descriptor="ps")
        except StoreLockedError as exc:
            print("locked:", exc)
        """
    )
    with st.open_store(root).lock():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("locked: Another microscale run"), out.stderr


# --------------------------------------------------------------------------- Dask


def test_dask_path_equals_sequential(tmp_path):
    images = _images(17, seed=16)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    _all_stages(sequential)
    progress = []
    with cluster_client(processes=False, n_workers=2, threads_per_worker=1) as client:
        feat.run_features(parallel, descriptor="ps", client=client)
        imf.image_features(parallel, descriptor="ps", client=client, images_per_task=4)
        counts = dist.run_distances(
            parallel,
            descriptor="ps",
            client=client,
            block_size=5,
            on_done=lambda done, total: progress.append((done, total)),
        )
    assert counts.computed == 10 and progress[0] == (0, 10) and progress[-1] == (10, 10)
    a, b = st.open_store(sequential), st.open_store(parallel)
    for name in ("features/ps", "image_features/ps", "distances/ps"):
        np.testing.assert_array_equal(st.read_rows(a, name), st.read_rows(b, name))


@pytest.mark.slow
def test_worker_processes_open_the_store_themselves(tmp_path):
    images = _images(7, seed=19)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    _all_stages(sequential)
    with cluster_client(processes=True, n_workers=1, threads_per_worker=1) as client:
        _all_stages(parallel, client=client)
    a, b = st.open_store(sequential), st.open_store(parallel)
    np.testing.assert_array_equal(st.read_rows(a, "distances/ps"), st.read_rows(b, "distances/ps"))


_SIZES: list[int] = []


def _record_size(batch_size):
    """An oom_hook that Dask pickles by reference, so calls land in this module's list."""
    _SIZES.append(batch_size)


def test_dask_path_with_scattered_weights(tmp_path, fake_weights):
    images = _images(4, seed=17)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    feat.run_features(sequential, **kwargs)
    _SIZES.clear()
    with cluster_client(processes=False, n_workers=2, threads_per_worker=1) as client:
        feat.run_features(parallel, client=client, batch_size=3, oom_hook=_record_size, **kwargs)
    assert _SIZES == [3] * len(
        runner.row_ranges(st.open_store(parallel).n_tiles, 5)
    )  # options arrive
    np.testing.assert_allclose(
        st.read_rows(st.open_store(parallel), "features/cnn"),
        st.read_rows(st.open_store(sequential), "features/cnn"),
        rtol=1e-6,
    )


def test_work_units_are_picklable():
    batch = runner.Batch(3, 15, 20)
    pair = runner.BlockPair(1, 2, (5, 10), (10, 13))
    assert pickle.loads(pickle.dumps(batch)) == batch and batch.extent == {"rows": [15, 20]}
    assert pickle.loads(pickle.dumps(pair)) == pair and pair.key == "000001-000002"
    for func in (
        feat.compute_feature_batch,
        imf.compute_image_features,
        dist.compute_distance_blocks,
    ):
        assert pickle.loads(pickle.dumps(func)) is func


# --------------------------------------------------------------------------- embedding


def test_embed_matches_mds_and_is_stored(tmp_path):
    images = _images(12, seed=18)
    root = _make(tmp_path / "s", images)
    _all_stages(root)
    result = emb.embed(root, descriptor="ps", n_components=[1, 2, 3])
    D = st.read_rows(st.open_store(root), "distances/ps")
    expected, infos = _fit(D, [1, 2, 3], random_state=0)
    for k in (1, 2, 3):
        assert result["stress"][k] == pytest.approx(infos[k].stress, rel=1e-9)
        np.testing.assert_allclose(cdist(result["embeddings"][k], result["embeddings"][k]),
                                   cdist(expected[k], expected[k]), atol=1e-9)  # fmt: skip
    assert result["image_ids"].tolist() == [f"img{i:04d}" for i in range(12)]
    assert result["start"] == {1: "classical", 2: "classical", 3: "classical"}
    stored = st.read_array(st.open_store(root), "embeddings/ps/d2")
    np.testing.assert_array_equal(stored, result["embeddings"][2])
    again = emb.embed(root, descriptor="ps", n_components=[2])  # starts from the stored map too
    assert again["stress"][2] <= result["stress"][2] + 1e-12


def test_grown_partial_batch_computes_only_its_new_tiles(tmp_path, monkeypatch):
    import microscale.spectrum as spectrum

    first, more = _images(3, 11, max_tiles=1), _images(2, 12, max_tiles=1)
    root = _make(tmp_path / "grown", first, features_chunk=8)  # 3 of 8 rows: a partial chunk
    feat.run_features(root, descriptor="ps")
    _fill(st.open_store(root), more, offset=0)
    seen = []
    real = spectrum.power_spectra
    monkeypatch.setattr(
        spectrum, "power_spectra", lambda x, **kw: seen.append(len(x)) or real(x, **kw)
    )
    counts = feat.run_features(root, descriptor="ps")
    assert counts.computed == 1 and seen == [2]  # the batch was completed, not recomputed
    clean = _make(tmp_path / "clean", first + more, features_chunk=8)
    feat.run_features(clean, descriptor="ps")
    np.testing.assert_array_equal(
        st.read_array(st.open_store(root), "features/ps"),
        st.read_array(st.open_store(clean), "features/ps"),
    )


def test_tile_level_map_is_the_tiles_own_distances(tmp_path):
    from scipy.spatial.distance import cdist

    images = _images(6, 21, max_tiles=3)
    root = _make(tmp_path / "tiles", images, features_chunk=4)
    feat.run_features(root, descriptor="ps")
    counts = dist.run_distances(root, descriptor="ps", block_size=3, level="tile")
    store = st.open_store(root)
    feats = st.read_array(store, "features/ps")
    D = st.read_array(store, "tile_distances/ps")
    n = store.n_tiles
    assert (
        D.shape == (n, n)
        and counts.computed == len(range(0, n, 3)) * (len(range(0, n, 3)) + 1) // 2
    )
    np.testing.assert_allclose(D, cdist(feats, feats), rtol=1e-6, atol=1e-9 * D.max())
    assert np.array_equal(D, D.T) and not np.diag(D).any()
    res = emb.embed(root, descriptor="ps", n_components=[2], level="tile")
    assert res["embeddings"][2].shape == (n, 2) and len(res["image_ids"]) == n
    assert all("@" in str(i) for i in res["image_ids"])
    # the image-level matrix is untouched by the tile level and vice versa
    assert not st.has_array(store, "distances/ps")
    with pytest.raises(ValueError, match="'level' parameter must be one of"):
        dist.run_distances(root, descriptor="ps", level="pixel")
