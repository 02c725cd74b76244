"""Builders shared by the tests of microscale/stages/."""

from __future__ import annotations

import numpy as np

from microscale.metric_mds import mds_with_info
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf

#: One layer of the fake VGG-19: 2080 features, for fast texture-vector tests.
ONE_LAYER = ("conv1_1",)


def fit(D, n_components, **kwargs):
    """(embedding, info) of one dimension, or ({k: X}, {k: info}) of several."""
    result = mds_with_info(D, n_components, **kwargs)
    if isinstance(n_components, int):
        return result.embeddings[n_components], result.info[n_components]
    return result.embeddings, result.info


def all_stages(root, *, descriptor="ps", block_size=5, client=None, **features):
    """Run features, image features and distances; their counts by stage."""
    return {
        "features": feat.run_features(root, descriptor=descriptor, client=client, **features),
        "images": imf.image_features(root, descriptor=descriptor, client=client, images_per_task=4),
        "distances": dist.run_distances(
            root, descriptor=descriptor, client=client, block_size=block_size
        ),
    }


def weighted_means(features, images):
    """The oracle of image features: each image's tile features weighted by pixel counts."""
    out, start = [], 0
    for tiles, weights in images:
        f = features[start : start + len(tiles)].astype(np.float64)
        out.append(weights @ f / weights.sum())
        start += len(tiles)
    return np.array(out)
