"""read_rows(out=) reads plain chunk files straight into the buffer, else through Zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from microscale import store as st


def _rows_store(tmp_path, n=23, d=7, chunk=5):
    store = st.create_store(tmp_path / "s", tile_size=4, tiles_per_chunk=4, features_chunk=chunk)
    st.ensure_features_array(store, "features/cnn", d, n_rows=n, chunk_rows=chunk)
    X = np.arange(n * d, dtype=np.float32).reshape(n, d) / 7
    for a in range(0, n, chunk):
        st.write_block(store, "features/cnn", X[a : a + chunk], rows=(a, min(n, a + chunk)))
    return store, X


def _no_zarr_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("read through Zarr")

    monkeypatch.setattr(zarr.Array, "get_basic_selection", refuse)


@pytest.mark.parametrize(("a", "b"), [(0, 23), (3, 12), (5, 10), (20, 23), (22, 23), (7, 8)])
def test_rows_come_from_the_chunk_files_without_zarr(tmp_path, monkeypatch, a, b):
    store, X = _rows_store(tmp_path)
    _no_zarr_reads(monkeypatch)
    out = np.full((b - a, 7), -1.0, np.float32)
    assert st.read_rows(store, "features/cnn", a, b, out=out) is out
    np.testing.assert_array_equal(out, X[a:b])


def test_a_missing_chunk_reads_as_the_fill_value_through_zarr(tmp_path):
    store, X = _rows_store(tmp_path)
    (store.root / st.GROUP_NAME / "features/cnn/c/1/0").unlink()  # rows 5:10
    out = np.empty((12, 7), np.float32)
    st.read_rows(store, "features/cnn", 0, 12, out=out)
    assert np.isnan(out[5:10]).all()
    np.testing.assert_array_equal(out[:5], X[:5])
    np.testing.assert_array_equal(out[10:], X[10:12])


def test_a_short_chunk_file_is_left_to_zarr(tmp_path):
    store, _ = _rows_store(tmp_path)
    path = store.root / st.GROUP_NAME / "features/cnn/c/2/0"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="reshape"):  # Zarr's own error for a bad chunk
        st.read_rows(store, "features/cnn", 10, 15, out=np.empty((5, 7), np.float32))


def test_chunks_across_columns_are_read_by_zarr(tmp_path, monkeypatch):
    store = st.create_store(tmp_path / "s", tile_size=4, tiles_per_chunk=4, features_chunk=5)
    st.ensure_distance_matrix(store, "distances/cnn", 6, 4)
    D = np.arange(36.0).reshape(6, 6)
    for r in ((0, 4), (4, 6)):
        for c in ((0, 4), (4, 6)):
            st.write_block(store, "distances/cnn", D[slice(*r), slice(*c)], rows=r, cols=c)
    out = np.empty((4, 6))
    np.testing.assert_array_equal(st.read_rows(store, "distances/cnn", 2, 6, out=out), D[2:6])
    _no_zarr_reads(monkeypatch)
    with pytest.raises(AssertionError, match="through Zarr"):
        st.read_rows(store, "distances/cnn", 2, 6, out=out)
