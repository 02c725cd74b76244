"""Chunking of image features: divisors of the task groups; older stores keep theirs."""

import numpy as np

from microscale import store as st
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER


def test_image_feature_chunks_divide_the_groups_and_older_stores_keep_theirs(
    tmp_path, fake_weights
):
    assert imf._image_chunk_rows(305_888 * 4, 64) == 8  # 9.8 MB chunks of full vectors
    assert imf._image_chunk_rows(2048 * 4, 64) == 64  # sketches: one chunk per task
    assert imf._image_chunk_rows(imf.IMAGE_CHUNK_BYTES + 1, 64) == 1
    assert imf._image_chunk_rows(305_888 * 4, 60) == 12  # a divisor of the group, <= 13
    images = _images(9, seed=4)
    cnn = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    new, old = _make(tmp_path / "new", images), _make(tmp_path / "old", images)
    for root in (new, old):
        feat.run_features(root, **cnn)
    s_old = st.open_store(old)
    st.ensure_features_array(  # as stores made before: one image per chunk
        s_old, "image_features/cnn", 2080, n_rows=s_old.n_images, chunk_rows=1,
        dtype=np.float32, row_dim="image",
        attrs=dict(st.array_attrs(s_old, "features/cnn")),
    )  # fmt: skip
    for root in (new, old):
        imf.image_features(root, descriptor="cnn", images_per_task=4)
    s_new = st.open_store(new)
    assert st.array_chunks(s_new, "image_features/cnn") == (4, 2080)
    assert st.array_chunks(s_old, "image_features/cnn") == (1, 2080)
    np.testing.assert_array_equal(
        st.read_rows(s_new, "image_features/cnn"), st.read_rows(s_old, "image_features/cnn")
    )
