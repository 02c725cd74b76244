"""The embedding stage (stages/embed.py): metric MDS of the stored distances."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale import store as st
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.testing.stores import fill as _fill
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import all_stages, fit

# --------------------------------------------------------------------------- embedding


def test_embed_matches_mds_and_is_stored(tmp_path):
    images = _images(12, seed=18)
    root = _make(tmp_path / "s", images)
    all_stages(root)
    result = emb.embed(root, descriptor="ps", n_components=[1, 2, 3])
    D = st.read_rows(st.open_store(root), "distances/ps")
    expected, infos = fit(D, [1, 2, 3], random_state=0)
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
