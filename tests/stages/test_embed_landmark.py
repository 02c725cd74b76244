"""Landmark MDS in the embedding stage, past max_dense, against the dense path."""

import numpy as np
import pytest

from microscale import store as st
from microscale.metric_mds import stress
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import S
from microscale.testing.stores import make as _make
from tests.stages.helpers import fit


def _stripes(n, seed):
    """n one-tile images of noisy stripes (an angle and a frequency): a 2-D family."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:S, 0:S]
    out = []
    for _ in range(n):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(1.5, 4.0)
        phase = 2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) / S
        tile = 0.5 + 0.4 * np.sin(phase) + 0.05 * rng.standard_normal((S, S))
        out.append((tile[None].astype(np.float32), np.array([float(S * S)])))
    return out


@pytest.fixture(scope="module")
def stripes_store(tmp_path_factory):
    """80 images of stripes, power spectra, distances in blocks of 16."""
    root = _make(tmp_path_factory.mktemp("stripes") / "s", _stripes(80, seed=8))
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=16)
    dist.run_distances(root, descriptor="ps", block_size=16)
    return root


def test_landmark_embed_reports_the_stress_of_the_full_matrix(stripes_store, monkeypatch):
    D = st.read_rows(st.open_store(stripes_store), "distances/ps")
    dense = emb.embed(stripes_store, descriptor="ps", n_components=[2, 3], device="cpu", save=False)
    reads = []
    real = emb.read_rows

    def spy(store, name, start=0, stop=None, **kwargs):
        reads.append((name, start, stop))
        return real(store, name, start, stop, **kwargs)

    monkeypatch.setattr(emb, "read_rows", spy)
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2, 3], device="cpu", max_dense=50,
                   landmarks=30, save=False)  # fmt: skip
    assert res["method"] == "landmark" and res["n_landmarks"] == 30
    assert res["start"] == {2: "landmark", 3: "landmark"}
    for k in (2, 3):
        X = res["embeddings"][k]
        assert X.shape == (80, k)
        assert res["stress"][k] == pytest.approx(stress(D, X), rel=1e-9)  # the full matrix
        assert dense["stress"][k] <= res["stress"][k] + 1e-9
        assert res["stress"][k] < 1.5 * dense["stress"][k]  # the price: small
    # The matrix is only ever read a band (one row of 16-row chunks) at a time.
    bands = [(a, b) for name, a, b in reads if name == "distances/ps"]
    assert bands and all(b is not None and 0 < b - a <= 16 and a % 16 == 0 for a, b in bands)
    assert dense["method"] == "dense" and dense["n_landmarks"] is None


def test_landmark_embed_past_max_dense_is_saved(stripes_store):
    # n = 80 > max_dense: landmark MDS with min(DEFAULT_LANDMARKS, n) = 80 landmarks.
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2], device="cpu", max_dense=79)
    assert res["method"] == "landmark" and res["n_landmarks"] == 80
    store = st.open_store(stripes_store)
    D = st.read_rows(store, "distances/ps")
    assert res["stress"][2] == pytest.approx(stress(D, res["embeddings"][2]), rel=1e-9)
    np.testing.assert_array_equal(st.read_array(store, "embeddings/ps/d2"), res["embeddings"][2])
    attrs = st.array_attrs(store, "embeddings/ps/d2")
    assert attrs["method"] == "landmark" and attrs["n_landmarks"] == 80
    # The next run is rotated onto the stored map: same points, same place.
    again = emb.embed(stripes_store, descriptor="ps", n_components=[2], device="cpu", max_dense=79)
    np.testing.assert_allclose(again["embeddings"][2], res["embeddings"][2], atol=1e-9)


def test_dense_path_is_unchanged(stripes_store):
    D = st.read_rows(st.open_store(stripes_store), "distances/ps")
    res = emb.embed(stripes_store, descriptor="ps", n_components=[1, 2], device="cpu", max_dense=80,
                   init_from_previous=False, save=False)  # fmt: skip
    expected, infos = fit(D, [1, 2], random_state=0, device="cpu")
    assert res["method"] == "dense" and res["n_landmarks"] is None
    for k in (1, 2):
        np.testing.assert_array_equal(res["embeddings"][k], expected[k])  # bit for bit
        assert res["stress"][k] == infos[k].stress


def test_landmark_options_are_checked(stripes_store):
    # more landmarks than images (a growing archive): all of them, no error
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2], landmarks=81, save=False)
    assert res["method"] == "landmark" and res["n_landmarks"] == 80
    with pytest.raises(ValueError, match="dims up to 3 with 3 landmarks. Pass more landmarks"):
        emb.embed(stripes_store, descriptor="ps", n_components=[3], landmarks=3, save=False)
    with pytest.raises(ValueError, match="'max_dense' parameter must be a positive int"):
        emb.embed(stripes_store, descriptor="ps", n_components=[2], max_dense=0, save=False)
