"""The features stage (stages/features.py) through the store, against in-memory oracles."""

import numpy as np
import pytest
import torch

from microscale import store as st
from microscale.spectrum import power_spectra
from microscale.stages import _runner as runner
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import StoreError
from microscale.testing.stores import S
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from microscale.texture import texture_vectors
from tests.stages.helpers import ONE_LAYER, weighted_means

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
        st.read_rows(store, "image_features/cnn"), weighted_means(features, images), rtol=1e-6
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
