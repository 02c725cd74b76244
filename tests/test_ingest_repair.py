"""Damaged tile chunks are named by ``verify_store`` and rebuilt from the archive's files."""

import shutil

import numpy as np
import pytest

from microscale import errors
from microscale import store as st
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.stages import features as feat
from microscale.stages.verify import verify_store

OPTIONS = {"tile_size": 32, "tiles_per_chunk": 3, "normalize": "minmax"}  # chunks span images


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("repair")
    archive = write_demo_archive(root / "archive", n=9, size=64, seed=4)
    ingest_archive(archive, root / "clean", **OPTIONS)
    feat.run_features(root / "clean", descriptor="ps")
    return archive, root / "clean"


@pytest.fixture
def store(clean, tmp_path):
    return shutil.copytree(clean[1], tmp_path / "s")


def _tile_files(root):
    chunks = root / st.GROUP_NAME / "tiles" / "c"
    return {p.relative_to(root): p.read_bytes() for p in chunks.rglob("*") if p.is_file()}


def _damage(path, how):
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :])


@pytest.mark.parametrize("repair", [False, True])
@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
def test_a_damaged_tile_chunk_is_named_and_rebuilt_by_the_next_ingest(clean, store, how, repair):
    archive, clean_root = clean
    _damage(store / st.GROUP_NAME / "tiles/c/1/0/0", how)  # tiles 3:6, of two images
    report = verify_store(store, repair=repair)
    [problem] = report.problems
    assert (problem.stage, problem.key, problem.extent) == ("tiles", "000000001", {"rows": [3, 6]})
    assert list(problem.chunks) == ["tiles/c/1/0/0"]
    again = ingest_archive(archive, store, **OPTIONS)
    assert again.new_images == 0
    assert _tile_files(store) == _tile_files(clean_root)  # rebuilt bit for bit
    assert verify_store(store).ok
    assert feat.run_features(store, descriptor="ps").computed == 0  # its features still hold


def test_features_refuse_damaged_tiles_they_would_read(clean, tmp_path):
    archive, _ = clean
    root = tmp_path / "s"
    ingest_archive(archive, root, **OPTIONS)
    _damage(root / st.GROUP_NAME / "tiles/c/2/0/0", "flip")
    with pytest.raises(errors.DamagedStoreError, match=r"tiles 000000002 .*tiles/c/2/0/0"):
        feat.run_features(root, descriptor="ps")
    ingest_archive(archive, root, **OPTIONS)  # rebuilds the chunk the check dropped
    feat.run_features(root, descriptor="ps")
    a = st.read_rows(st.open_store(root), "features/ps")
    b = st.read_rows(st.open_store(clean[1]), "features/ps")
    np.testing.assert_array_equal(a, b)
