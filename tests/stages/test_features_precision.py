"""Precision and backbone of the features stage: bfloat16 fixed per store, the random backbone's
identity.
"""

import numpy as np
import pytest

from microscale import store as st
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import StoreError
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER


def test_pipeline_runs_the_random_backbone_and_records_its_identity(tmp_path):
    """weights="random:3" through run_features: 524,800-long vectors (or their sketch),
    equal to texture_vectors of the same tiles, stamped with the backbone's sha256."""
    from microscale.backbones import describe_backbone
    from microscale.texture import texture_vectors

    images = _images(3, seed=11, max_tiles=1)
    root = _make(tmp_path / "r", images)
    feat.run_features(root, descriptor="cnn", weights="random:3", normalize=None, device="cpu")
    store = st.open_store(root)
    attrs = st.array_attrs(store, "features/cnn")
    assert attrs["layers"] == ["multiscale"]
    assert attrs["weights_sha256"] == describe_backbone("random:3").sha256
    assert attrs["weights_sha256"] != describe_backbone("random:4").sha256
    got = st.read_rows(store, "features/cnn")
    assert got.shape == (3, 524_800)
    tiles = np.concatenate([t for t, _ in images])
    want = texture_vectors(tiles, weights="random:3", normalize=None, device="cpu")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # the same store refuses another backbone's vectors
    with pytest.raises(StoreError, match="weights_sha256"):
        feat.run_features(root, descriptor="cnn", weights="random:4", normalize=None, device="cpu")


# --------------------------------------------------------------------------- precision


def test_bfloat16_features_are_texture_vectors_in_bfloat16_and_fixed_per_store(
    tmp_path, fake_weights
):
    from microscale.texture import texture_vectors

    images = _images(5, seed=2)
    cnn = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    fast, exact = _make(tmp_path / "fast", images), _make(tmp_path / "exact", images)
    feat.run_features(fast, precision="bfloat16", **cnn)
    feat.run_features(exact, **cnn)
    a, b = st.open_store(fast), st.open_store(exact)
    tiles = st.read_tiles(a, 0, a.n_tiles)
    got = st.read_rows(a, "features/cnn")
    expected = texture_vectors(tiles, weights=fake_weights, layers=ONE_LAYER, normalize=None,
                               device="cpu", precision="bfloat16")  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
    assert np.abs(got - st.read_rows(b, "features/cnn")).max() > 0  # the control
    assert st.array_attrs(a, "features/cnn")["precision"] == "bfloat16"
    assert "precision" not in st.array_attrs(b, "features/cnn")  # float32: as older stores
    imf.image_features(fast, descriptor="cnn", images_per_task=2)
    assert st.array_attrs(a, "image_features/cnn")["precision"] == "bfloat16"
    with pytest.raises(StoreError, match="computed in bfloat16, but this run asks for float32"):
        feat.run_features(fast, **cnn)
    with pytest.raises(StoreError, match="computed in float32, but this run asks for bfloat16"):
        feat.run_features(exact, precision="bfloat16", **cnn)
    a.clear_done("features.cnn")  # a batch to recompute, asked in the wrong precision
    batch = feat.plan_feature_batches(a)[0]
    with pytest.raises(StoreError, match="precision='bfloat16'"):
        feat.compute_feature_batch(fast, batch, **cnn)
    with pytest.raises(ValueError, match="'precision' parameter must be one of"):
        feat.run_features(_make(tmp_path / "bad", images), precision="fp16", **cnn)
