"""count_tiles: the tiles of a declared size, without the image, equal to tile()'s."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from microscale.io import count_tiles, tile


@pytest.mark.parametrize(
    ("shape", "tile_size", "stride"),
    list(itertools.product([(7, 9), (20, 33), (64, 64), (65, 200)], [8, 16, 64], [None, 3, 5])),
)
def test_count_tiles_equals_the_tiles_cut(shape, tile_size, stride):
    if stride is not None and stride > tile_size:
        pytest.skip("stride > tile_size is invalid")
    tiles, _ = tile(np.zeros(shape), tile_size=tile_size, stride=stride, min_fraction=0.1)
    assert count_tiles(shape, tile_size=tile_size, stride=stride) == len(tiles)


def test_count_tiles_of_the_issue_declarations():
    assert count_tiles((20480, 20480)) == 6400
    assert count_tiles((100_000, 100_000)) == 152_881
    assert count_tiles((768, 1024)) == 12
