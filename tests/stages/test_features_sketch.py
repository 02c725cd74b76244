"""Sketched texture vectors through the features stage, against the sketch of the full vectors."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale import store as st
from microscale.metric_mds import stress
from microscale.sketch import sketch
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import StoreError
from microscale.testing.stores import S
from microscale.testing.stores import fill as _fill
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER

K = 256  # sketch length: 2080 / 256 ~ 8x smaller


def _bytes(root: Path, name: str) -> int:
    folder = root / st.GROUP_NAME / name
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- sketch


def test_sketched_features_are_the_sketch_of_the_full_features(tmp_path, fake_weights):
    images = _images(7, seed=1)
    cnn = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    full, small = _make(tmp_path / "full", images), _make(tmp_path / "small", images)
    for root, extra in ((full, {}), (small, {"sketch_dim": K, "sketch_seed": 3})):
        feat.run_features(root, **cnn, **extra)
        imf.image_features(root, descriptor="cnn", images_per_task=3)
    a, b = st.open_store(full), st.open_store(small)
    F = st.read_rows(a, "features/cnn")
    got = st.read_rows(b, "features/cnn")
    expected = sketch(F, n_components=K, seed=3, block=feat.SKETCH_BLOCK, device="cpu")
    assert got.shape == (b.n_tiles, K) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # Image features: the weighted mean of sketches is the sketch of the weighted mean.
    G = st.read_rows(a, "image_features/cnn")
    np.testing.assert_allclose(
        st.read_rows(b, "image_features/cnn"),
        sketch(G, n_components=K, seed=3, device="cpu"),
        rtol=1e-4,
        atol=1e-5 * np.abs(expected).max(),
    )
    setting = {"n_components": K, "seed": 3, "input_dim": 2080, "block": feat.SKETCH_BLOCK}
    for name in ("features/cnn", "image_features/cnn"):
        assert st.array_attrs(b, name)["sketch"] == setting
        assert st.array_attrs(a, name)["sketch"] is None
    # Only the sketch is stored: the features take 2080 / 256 ~ 8x less disk.
    assert _bytes(small, "features/cnn") * 7 < _bytes(full, "features/cnn")


def test_a_grown_sketched_store_equals_a_fresh_one(tmp_path, fake_weights):
    old, new = _images(3, seed=2, max_tiles=1), _images(4, seed=3, max_tiles=1)
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER,
              "device": "cpu", "sketch_dim": K}  # fmt: skip
    grown = _make(tmp_path / "grown", old, features_chunk=5)  # 3 of 5 rows: partial chunk
    feat.run_features(grown, **kwargs)
    _fill(st.open_store(grown), new)
    assert feat.run_features(grown, **kwargs).computed == 2  # the partial chunk and a new one
    clean = _make(tmp_path / "clean", old + new, features_chunk=5)
    feat.run_features(clean, **kwargs)
    np.testing.assert_array_equal(
        st.read_rows(st.open_store(grown), "features/cnn"),
        st.read_rows(st.open_store(clean), "features/cnn"),
    )


def test_distances_and_embedding_of_a_sketched_store(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(13, seed=4, max_tiles=2))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER,
                    device="cpu", sketch_dim=K, sketch_seed=5)  # fmt: skip
    imf.image_features(root, descriptor="cnn", images_per_task=4)
    dist.run_distances(root, descriptor="cnn", block_size=5, device="cpu")
    store = st.open_store(root)
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    assert F.shape == (13, K)
    D = st.read_rows(store, "distances/cnn")
    np.testing.assert_allclose(D, cdist(F, F), rtol=1e-6, atol=0)
    assert st.array_attrs(store, "distances/cnn")["sketch"]["n_components"] == K
    res = emb.embed(root, descriptor="cnn", n_components=[2], device="cpu", save=False)
    assert res["stress"][2] == pytest.approx(stress(D, res["embeddings"][2]), rel=1e-9)


def test_only_texture_vectors_longer_than_the_sketch_are_sketched(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(3, seed=6))
    feat.run_features(root, descriptor="ps", sketch_dim=64)  # 256 > 64, but the baseline
    store = st.open_store(root)
    assert st.array_shape(store, "features/ps") == (store.n_tiles, S * S)
    assert st.array_attrs(store, "features/ps")["sketch"] is None
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER,
                    device="cpu", sketch_dim=4096)  # fmt: skip
    assert st.array_shape(store, "features/cnn") == (store.n_tiles, 2080)
    assert st.array_attrs(store, "features/cnn")["sketch"] is None


def test_a_store_keeps_its_sketch_setting(tmp_path, fake_weights):
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    root = _make(tmp_path / "s", _images(3, seed=7))
    feat.run_features(root, sketch_dim=K, **kwargs)
    stored = r"stored setting \(sketch_dim=256, sketch_seed=0\), or write this one to a new"
    with pytest.raises(StoreError, match=f"s.*holds sketches .* asks for full vectors.*{stored}"):
        feat.run_features(root, **kwargs)
    with pytest.raises(StoreError, match=f"asks for sketches .* 128 dimensions.*{stored}"):
        feat.run_features(root, sketch_dim=128, **kwargs)
    with pytest.raises(StoreError, match=f"\\(seed 1, .*{stored}"):
        feat.run_features(root, sketch_dim=K, sketch_seed=1, **kwargs)
    assert feat.run_features(root, sketch_dim=K, **kwargs).computed == 0

    whole = _make(tmp_path / "whole", _images(3, seed=7))
    feat.run_features(whole, **kwargs)
    with pytest.raises(StoreError, match=r"holds full vectors .*\(sketch_dim=None\)"):
        feat.run_features(whole, sketch_dim=K, **kwargs)
    with pytest.raises(ValueError, match="'sketch_dim' parameter must be a positive int"):
        feat.run_features(whole, sketch_dim=0, **kwargs)
    with pytest.raises(ValueError, match="'sketch_seed' parameter must be a non-negative int"):
        feat.run_features(whole, sketch_seed=-1, **kwargs)
