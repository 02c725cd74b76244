"""The store layout, its commit rule, completion records and the run lock."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from microscale import store as st
from microscale.store import (
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
)


def _tiles(rng, t, s=8):
    return rng.random((t, s, s)).astype(np.float32)


def _add(store, rng, counts, *, ids=None, s=8):
    """Append images with the given tile counts and commit them; return their tiles."""
    first = store.next_image_index
    ids = ids or [f"hash{first + k}" for k in range(len(counts))]
    out = []
    for k, t in enumerate(counts):
        tiles = _tiles(rng, t, s)
        out.append(tiles)
        st.append_tiles(
            store,
            tiles,
            image_index=np.full(t, first + k),
            origins=np.arange(2 * t).reshape(t, 2),
            weights=np.full(t, 64.0),
        )
    st.append_images(store, image_ids=ids, paths=[f"/data/{i}.tif" for i in ids])
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def store(tmp_path):
    return st.create_store(tmp_path / "archive", tile_size=8, tiles_per_chunk=4)


def test_layout_of_a_new_store(store):
    group_json = json.loads((store.root / "store.zarr" / "zarr.json").read_text())
    assert group_json["zarr_format"] == 3
    attrs = group_json["attributes"]
    assert attrs["microscale_store"] == st.FORMAT_VERSION
    assert (attrs["tile_size"], attrs["tiles_per_chunk"], attrs["features_chunk"]) == (8, 4, 4)
    assert (attrs["n_tiles"], attrs["n_images"]) == (0, 0)
    tiles = json.loads((store.root / "store.zarr" / "tiles" / "zarr.json").read_text())
    assert tiles["shape"] == [0, 8, 8]
    assert tiles["dimension_names"] == ["tile", "y", "x"]
    assert tiles["chunk_grid"]["configuration"]["chunk_shape"] == [4, 8, 8]
    assert tiles["data_type"] == "float32"
    # Strings are Zarr's variable-length type, not numpy's fixed-width 'U' (no v3 spec).
    for name in ("image_id", "image_path"):
        meta = json.loads((store.root / "store.zarr" / name / "zarr.json").read_text())
        assert meta["data_type"] == "string"


def test_create_refuses_an_existing_store(store):
    with pytest.raises(StoreExistsError, match="already exists.*exist_ok=True"):
        st.create_store(store.root, tile_size=8)
    assert st.create_store(store.root, tile_size=8, exist_ok=True).root == store.root
    with pytest.raises(StoreError, match="holds 8-pixel tiles, not 16"):
        st.create_store(store.root, tile_size=16, exist_ok=True)


def test_open_a_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="No microscale store") as info:
        st.open_store(tmp_path)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_create_validates_sizes(tmp_path, bad):
    with pytest.raises(ValueError, match="'tile_size' parameter must be an int >= 1"):
        st.create_store(tmp_path, tile_size=bad)


def test_append_and_read_back(store, rng):
    tiles = _add(store, rng, [3, 1, 5])
    again = st.open_store(store.root)
    assert (again.n_images, again.n_tiles) == (3, 9)
    np.testing.assert_array_equal(st.read_tiles(again), np.concatenate(tiles))
    np.testing.assert_array_equal(st.read_tiles(again, 3, 4), tiles[1])
    table = st.image_table(again)
    assert table["image_id"].tolist() == ["hash0", "hash1", "hash2"]
    assert table["image_path"][2] == "/data/hash2.tif"
    np.testing.assert_array_equal(table["image_tiles"], [[0, 3], [3, 4], [4, 9]])
    assert np.isnan(table["pixel_size_nm"]).all()
    prov = st.tile_table(again)
    np.testing.assert_array_equal(prov["tile_image"], [0, 0, 0, 1, 2, 2, 2, 2, 2])
    assert prov["tile_origin"].dtype == np.int32 and prov["tile_weight"].dtype == np.float64
    assert again.image_index("hash1") == 1 and again.image_index("nope") is None
    assert st.read_manifest(again)["images"]["hash2"] == ["/data/hash2.tif"]
    # A second batch continues the indices.
    _add(store, rng, [2])
    assert st.image_table(st.open_store(store.root), 3)["image_tiles"].tolist() == [[9, 11]]


def test_uncommitted_tiles_are_invisible_and_replaced(store, rng):
    _add(store, rng, [2])
    # A run appends tiles for image 1 and crashes before append_images.
    st.append_tiles(
        store, _tiles(rng, 3), image_index=[1, 1, 1], origins=np.zeros((3, 2)), weights=[1, 1, 1]
    )
    crashed = st.open_store(store.root)
    assert (crashed.n_images, crashed.n_tiles) == (1, 2)
    with pytest.raises(StoreError, match="outside the 2 tiles"):
        st.read_tiles(crashed, 0, 3)
    # The next run writes over the orphans and commits only its own tiles.
    new = _add(crashed, rng, [1], ids=["other"])
    reopened = st.open_store(store.root)
    assert (reopened.n_images, reopened.n_tiles) == (2, 3)
    np.testing.assert_array_equal(st.read_tiles(reopened, 2, 3), new[0])
    assert st.tile_table(reopened)["tile_image"].tolist() == [0, 0, 1]


def test_append_validation(store, rng):
    _add(store, rng, [1])
    with pytest.raises(StoreError, match=r"tiles must have shape \(t, 8, 8\)"):
        st.append_tiles(store, _tiles(rng, 1, s=9), image_index=[1], origins=[[0, 0]], weights=[1])
    with pytest.raises(StoreError, match="must not decrease and must start at 1"):
        st.append_tiles(store, _tiles(rng, 1), image_index=[0], origins=[[0, 0]], weights=[1])
    with pytest.raises(StoreError, match="NaN or infinite"):
        st.append_tiles(
            store, np.full((1, 8, 8), np.nan), image_index=[1], origins=[[0, 0]], weights=[1]
        )
    with pytest.raises(StoreError, match="already in the store"):
        st.append_tiles(store, _tiles(rng, 1), image_index=[1], origins=[[0, 0]], weights=[1])
        st.append_images(store, image_ids=["hash0"], paths=["/again.tif"])
    fresh = st.open_store(store.root)
    with pytest.raises(StoreError, match="every new image needs its tiles"):
        st.append_images(fresh, image_ids=["x"], paths=["/x.tif"])


def test_record_files_keeps_every_path(store, rng):
    _add(store, rng, [1])
    st.record_files(
        store,
        {
            "/copy/of/hash0.tif": {"status": "skipped", "reason": "duplicate", "image_id": "hash0"},
            "/notes.txt": {"status": "failed", "reason": "not an image"},
        },
    )
    manifest = st.read_manifest(store.root)
    assert manifest["images"]["hash0"] == ["/data/hash0.tif", "/copy/of/hash0.tif"]
    assert manifest["files"]["/notes.txt"] == {"status": "failed", "reason": "not an image"}
    with pytest.raises(StoreError, match="status 'ok'; use one of"):
        st.record_files(store, {"/a": {"status": "ok"}})


def test_manifest_is_an_append_only_log(store, rng):
    """Each update appends one line; earlier bytes are never rewritten (O(n) for n files)."""
    _add(store, rng, [1])
    log = store.root / st.MANIFEST_NAME
    before = log.read_bytes()
    for k in range(3):
        st.record_files(store, {f"/f{k}.tif": {"status": "failed", "reason": "decode"}})
        after = log.read_bytes()
        assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
        before = after
    # A later outcome of the same path wins; the paths of an image accumulate.
    st.record_files(store, {"/f0.tif": {"status": "processed", "image_id": "hash0"}})
    manifest = st.read_manifest(store.root)
    assert manifest["files"]["/f0.tif"] == {"status": "processed", "image_id": "hash0"}
    assert manifest["images"]["hash0"] == ["/data/hash0.tif", "/f0.tif"]
    assert sorted(manifest["files"]) == ["/f0.tif", "/f1.tif", "/f2.tif"]


def test_manifest_survives_a_torn_last_line(store, rng):
    _add(store, rng, [1])
    st.record_files(store, {"/a.tif": {"status": "skipped", "reason": "x"}})
    log = store.root / st.MANIFEST_NAME
    good = log.read_bytes()
    # A crash in the middle of an append leaves half a line.
    log.write_bytes(good + b'{"files":{"/b.tif":{"sta')
    assert "/b.tif" not in st.read_manifest(store.root)["files"]
    # The next append drops the torn piece and starts a clean line.
    st.record_files(store, {"/c.tif": {"status": "skipped", "reason": "y"}})
    assert log.read_bytes().startswith(good)
    assert sorted(st.read_manifest(store.root)["files"]) == ["/a.tif", "/c.tif"]


def test_manifest_of_an_older_store_is_read_first(store, rng):
    legacy = {"images": {"old": ["/old.tif"]}, "files": {"/old.tif": {"status": "processed"}}}
    (store.root / st.LEGACY_MANIFEST_NAME).write_text(json.dumps(legacy))
    st.record_files(store, {"/copy.tif": {"status": "skipped", "image_id": "old"}})
    manifest = st.read_manifest(store.root)
    assert manifest["images"]["old"] == ["/old.tif", "/copy.tif"]
    assert set(manifest["files"]) == {"/old.tif", "/copy.tif"}


def test_completion_records(store):
    extent = {"rows": [0, 5]}
    assert not store.is_done("features.cnn", "000000000", extent)
    store.mark_done("features.cnn", "000000000", extent)
    assert store.is_done("features.cnn", "000000000", {"rows": (0, 5)})
    assert not store.is_done("features.cnn", "000000000", {"rows": [0, 7]})  # grown: stale
    record = json.loads((store.root / "_done" / "features.cnn" / "000000000").read_text())
    assert record["extent"] == extent and record["pid"] == os.getpid()
    assert st.open_store(store.root).done_keys("features.cnn") == {"000000000": extent}
    assert not [p for p in (store.root / "_done" / "features.cnn").iterdir() if "tmp" in p.name]
    # An unreadable record (a torn write on a broken file system) is treated as not done.
    (store.root / "_done" / "features.cnn" / "000000001").write_text("{")
    assert not store.is_done("features.cnn", "000000001", extent)
    assert store.clear_done("features.cnn") == 2
    assert store.done_keys("features.cnn") == {}
    with pytest.raises(StoreError, match="not a valid record name"):
        store.mark_done("../escape", "k", extent)


def _try_lock_elsewhere(root):
    code = textwrap.dedent(
        f"""
        from microscale.store import open_store, StoreLockedError
        try:
            with open_store({str(root)!r}).lock():
                print("acquired")
        except StoreLockedError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_lock_refuses_a_second_run(store):
    with store.lock():
        message = _try_lock_elsewhere(store.root)
        assert message.startswith(f"Another microscale run (pid {os.getpid()} on ")
        assert f"is using the store {store.root}; wait for it to finish" in message
        # Re-entrant within this process (a flow holding it calls the stages).
        with st.open_store(store.root).lock():
            pass
    assert _try_lock_elsewhere(store.root) == "acquired"


def test_lock_error_types(store):
    assert issubclass(StoreLockedError, BlockingIOError)
    assert issubclass(StoreLockedError, ValueError)


def test_write_block_takes_whole_chunks_only(store):
    st.ensure_distance_matrix(store, "distances/ps", 7, 3)
    st.write_block(store, "distances/ps", np.ones((3, 3)), rows=(0, 3), cols=(3, 6))
    st.write_block(store, "distances/ps", np.ones((1, 3)), rows=(6, 7), cols=(0, 3))
    D = st.read_rows(store, "distances/ps")
    assert D.shape == (7, 7) and np.isnan(D[0, 0]) and D[0, 3] == 1 and D[6, 0] == 1
    with pytest.raises(StoreError, match="not made of whole chunks"):
        st.write_block(store, "distances/ps", np.ones((3, 3)), rows=(1, 4), cols=(0, 3))
    with pytest.raises(StoreError, match="not made of whole chunks"):
        st.write_block(store, "distances/ps", np.ones((3, 2)), rows=(0, 3), cols=(0, 2))
    with pytest.raises(StoreError, match=r"does not fit a region of shape \(3, 3\)"):
        st.write_block(store, "distances/ps", np.ones((3, 4)), rows=(0, 3), cols=(3, 6))


def test_arrays_grow_but_keep_their_settings(store):
    assert st.ensure_features_array(
        store, "features/ps", 6, n_rows=5, chunk_rows=4, dtype=np.float64, attrs={"a": 1}
    )
    st.write_block(store, "features/ps", np.arange(24.0).reshape(4, 6), rows=(0, 4))
    assert not st.ensure_features_array(
        store, "features/ps", 6, n_rows=9, chunk_rows=4, dtype=np.float64, attrs={"a": 1}
    )
    grown = st.read_rows(store, "features/ps")
    assert grown.shape == (9, 6)
    np.testing.assert_array_equal(grown[:4], np.arange(24.0).reshape(4, 6))
    assert np.isnan(grown[4:]).all()  # never written: the fill value, NaN
    with pytest.raises(StoreError, match="was computed with other settings"):
        st.ensure_features_array(
            store, "features/ps", 6, n_rows=9, chunk_rows=4, dtype=np.float64, attrs={"a": 2}
        )
    with pytest.raises(StoreError, match="chunks"):
        st.ensure_features_array(store, "features/ps", 6, n_rows=9, chunk_rows=5, dtype="f8")
    with pytest.raises(StoreError, match="never shrink"):
        st.ensure_features_array(store, "features/ps", 6, n_rows=3, chunk_rows=4, dtype="f8")
    with pytest.raises(StoreError, match="has no array 'features/cnn'"):
        st.read_rows(store, "features/cnn")


def test_write_array_replaces_small_arrays(store):
    st.write_array(store, "center/ps", np.arange(3.0), attrs={"n_images": 3})
    st.write_array(store, "center/ps", np.arange(5.0), attrs={"n_images": 5})
    np.testing.assert_array_equal(st.read_array(store, "center/ps"), np.arange(5.0))
    assert st.array_attrs(st.open_store(store.root), "center/ps") == {"n_images": 5}


def test_read_rows_into_a_reused_buffer(store, rng):
    _add(store, rng, [3, 2])
    st.ensure_array(store, "x/y", shape=(5, 7), chunks=(2, 7), dtype=np.float32,
                    dimension_names=("tile", "feature"))  # fmt: skip
    data = rng.random((5, 7)).astype(np.float32)
    st.write_block(store, "x/y", data[:4], rows=(0, 4))
    st.write_block(store, "x/y", data[4:], rows=(4, 5))
    buf = np.zeros((8, 7), np.float32)
    got = st.read_rows(store, "x/y", 1, 4, out=buf[:3])
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[:3], data[1:4])
    with pytest.raises(StoreError, match=r"out must be a C-contiguous float32 array of shape"):
        st.read_rows(store, "x/y", 0, 4, out=buf[:3])
    with pytest.raises(StoreError, match="C-contiguous"):
        st.read_rows(store, "x/y", 0, 2, out=np.zeros((7, 2), np.float32).T)
