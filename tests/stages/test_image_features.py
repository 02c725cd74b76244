"""The image-features stage (stages/image_features.py): pixel-weighted means of the tiles."""

import numpy as np

from microscale import store as st
from microscale.stages import _runner as runner
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import weighted_means

# --------------------------------------------------------------------------- image features


def test_image_features_are_pixel_weighted_means(tmp_path):
    images = _images(11, seed=8, max_tiles=4)
    root = _make(tmp_path / "s", images, features_chunk=3)  # images straddle chunks
    feat.run_features(root, descriptor="ps")
    counts = imf.image_features(root, descriptor="ps", images_per_task=4)
    assert counts == runner.StageCounts(computed=3, skipped=0)
    store = st.open_store(root)
    tiles = st.read_rows(store, "features/ps")
    expected = weighted_means(tiles, images)
    np.testing.assert_allclose(st.read_rows(store, "image_features/ps"), expected, rtol=1e-13)
    sums = st.read_array(store, "image_feature_sums/ps").sum(axis=0)
    np.testing.assert_allclose(sums, expected.sum(axis=0), rtol=1e-12)
