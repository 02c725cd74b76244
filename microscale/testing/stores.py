"""Small synthetic stores for the stage tests and benchmarks: random tiles, committed.

Examples
--------
>>> import tempfile, pathlib
>>> from microscale.store import open_store
>>> root = make(pathlib.Path(tempfile.mkdtemp()) / "s", random_images(3, seed=0))
>>> open_store(root).n_images
3
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microscale import store as st

__all__ = ["S", "fill", "make", "random_images"]

S = 16  #: tile side of the stores made here


def random_images(n: int, seed: int, *, max_tiles: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """n images as tile stacks in [0, 1] with weights: (tiles, weights) per image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.integers(1, max_tiles + 1))
        out.append((rng.random((t, S, S)).astype(np.float32), rng.integers(40, 257, t) * 1.0))
    return out


def fill(store: st.Store, images: list[tuple[np.ndarray, np.ndarray]], *, offset: int = 0) -> None:
    """Append ``images`` to ``store`` and commit them, ids ``img<offset + index>``."""
    for tiles, weights in images:
        index = store.next_image_index
        st.append_tiles(
            store,
            tiles,
            image_index=np.full(len(tiles), index),
            origins=np.zeros((len(tiles), 2), int),
            weights=weights,
        )
    n0 = store.n_images
    ids = [f"img{offset + n0 + k:04d}" for k in range(len(images))]
    st.append_images(store, image_ids=ids, paths=[f"/archive/{i}.png" for i in ids])


def make(
    path: str | Path, images: list[tuple[np.ndarray, np.ndarray]], *, features_chunk: int = 5
) -> str | Path:
    """A new store at ``path`` holding ``images``; returns ``path``."""
    store = st.create_store(path, tile_size=S, tiles_per_chunk=4, features_chunk=features_chunk)
    fill(store, images)
    return path
