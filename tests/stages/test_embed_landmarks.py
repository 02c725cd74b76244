"""embed() and the map in the 'landmarks' distance mode, against the full matrix."""

import json

import numpy as np
import pytest

from microscale import mapping, summary
from microscale import store as st
from microscale.errors import IncompleteStageError
from microscale.metric_mds import stress
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.stages import knn
from microscale.stages import landmarks as lm
from microscale.testing.stores import make, random_images


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A store of 90 images with the full matrix and the landmarks mode's arrays."""
    root = make(tmp_path_factory.mktemp("both") / "s", random_images(90, seed=0, max_tiles=1))
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=16)
    dist.run_distances(root, descriptor="ps", block_size=32, device="cpu")
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=25, block_size=32, device="cpu")
    knn.run_neighbors(root, descriptor="ps", k=5, block_size=32, device="cpu")
    return root


def test_the_sampled_stress_interval_holds_the_exact_stress(both):
    res = emb.embed(both, descriptor="ps", n_components=[1, 2, 3], device="cpu",
                    distances="landmarks", stress_sample=50, save=False)  # fmt: skip
    D = st.read_rows(st.open_store(both), "distances/ps")
    assert (res["distances"], res["stress_method"], res["method"]) == (
        "landmarks", "sampled", "landmark",
    )  # fmt: skip
    assert res["n_landmarks"] == 25 and res["stress_pairs"] == 50 * 49 // 2
    for k in (1, 2, 3):
        low, high = res["stress_interval"][k]
        exact = stress(D, res["embeddings"][k])  # of the same embedding, on every pair
        assert low <= exact <= high, (k, low, exact, high)
        assert low <= res["stress"][k] <= high
    # the whole set as the sample: the estimate is the exact stress
    res = emb.embed(both, descriptor="ps", n_components=[2], device="cpu",
                    distances="landmarks", stress_sample=90, save=False)  # fmt: skip
    assert res["stress"][2] == pytest.approx(stress(D, res["embeddings"][2]), rel=1e-9)


def test_the_mode_follows_max_dense_and_is_saved_with_the_embedding(tmp_path, both):
    root = make(tmp_path / "s", random_images(40, seed=2, max_tiles=1))
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps")
    lm.run_landmark_distances(root, descriptor="ps", n_landmarks=12, device="cpu")
    res = emb.embed(root, descriptor="ps", n_components=[2], device="cpu", max_dense=39,
                    stress_sample=30)  # fmt: skip
    assert res["distances"] == "landmarks"  # above max_dense, no matrix
    attrs = st.array_attrs(st.open_store(root), "embeddings/ps/d2")
    assert attrs["stress_method"] == "sampled" and attrs["distances"] == "landmarks"
    assert attrs["stress_low"] <= attrs["stress"] <= attrs["stress_high"]
    # a complete matrix (the distance stage was asked for it) is used whatever the size
    full = emb.embed(both, descriptor="ps", n_components=[2], device="cpu", max_dense=89,
                     save=False)  # fmt: skip
    assert (full["distances"], full["stress_method"]) == ("full", "exact")


def test_the_landmarks_mode_needs_its_stage(tmp_path):
    root = make(tmp_path / "s", random_images(12, seed=1, max_tiles=1))
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps")
    with pytest.raises(IncompleteStageError, match=r"run run_landmark_distances\(descriptor="):
        emb.embed(root, descriptor="ps", n_components=[2], distances="landmarks")
    with pytest.raises(ValueError, match="'distances' parameter"):
        emb.embed(root, descriptor="ps", n_components=[2], distances="sparse")


def test_the_map_in_the_landmarks_mode_has_the_full_maps_neighbours(both):
    kw = {"descriptors": ["ps"], "n_components": [2, 3], "device": "cpu"}
    sparse = mapping.map_store(both, distances="landmarks", stress_sample=60, **kw)
    dense = mapping.map_store(both, **kw)
    np.testing.assert_array_equal(sparse.neighbor.values, dense.neighbor.values)
    np.testing.assert_array_equal(sparse.outlier_score.values, dense.outlier_score.values)
    assert json.loads(sparse.attrs["distances"]) == {"ps": "landmarks"}
    assert json.loads(dense.attrs["stress_method"]) == {"ps": "exact"}
    interval = json.loads(sparse.attrs["stress_interval"])["ps"]
    assert set(interval) == {"2", "3"} and json.loads(sparse.attrs["stress_pairs"]) == {"ps": 1770}
    kept = json.loads(sparse.attrs["knn_preservation"])["ps"]
    assert 0 < kept["3"] <= 1
    value = float(sparse.knn_preservation.sel(descriptor="ps", n_components=3))
    assert value == pytest.approx(kept["3"], abs=1e-4)
    summ = summary.map_summary(sparse, [])
    low, high = summ["stress_interval"]["ps"][2]
    assert low <= summ["stress"]["ps"][2] <= high
    assert summ["knn_preservation"]["ps"][3] == kept["3"]
    assert "sampled pairs, 95 % interval" in summary.summary_markdown(summ, [])
