"""Re-runs with nothing new leave the map as it is; growth does not depend on them."""

import json

import numpy as np
import pytest
import tifffile

from microscale import metric_mds
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.mapping import map_store
from microscale.stages import embed as embed_stage
from microscale.stages.distances import run_distances
from microscale.stages.features import run_features
from microscale.stages.image_features import image_features
from microscale.store import array_attrs, open_store, read_array

DIMS = [1, 2, 3]


def _run(archive, root):
    """A whole run at the library level (what the pipeline flow does), power spectra only."""
    ingest_archive(archive, root, tile_size=32)
    run_features(root, descriptor="ps")
    image_features(root, descriptor="ps")
    run_distances(root, descriptor="ps", block_size=4)
    return map_store(root, descriptors=["ps"], n_components=DIMS, archive=archive)


def _stored(root):
    st = open_store(root)
    return {
        k: (read_array(st, f"embeddings/ps/d{k}"), array_attrs(st, f"embeddings/ps/d{k}")["stress"])
        for k in DIMS
    }


def _grow(archive):
    rng = np.random.default_rng(11)
    for i in range(3):
        img = (rng.random((64, 64)) * 60000).astype(np.uint16)
        tifffile.imwrite(archive / f"new_{i}.tif", img)


@pytest.fixture
def archive(tmp_path):
    return write_demo_archive(tmp_path / "archive", n=9, size=64, seed=3)


def test_a_rerun_with_nothing_new_recomputes_nothing_and_keeps_the_map_bit_for_bit(
    archive, tmp_path, monkeypatch
):
    root = tmp_path / "st"
    first = _run(archive, root)
    stored = _stored(root)
    assert json.loads(first.attrs["mds_unchanged"]) == {"ps": False}

    def no_mds(*args, **kwargs):
        raise AssertionError("MDS recomputed on a re-run with nothing new")

    monkeypatch.setattr(metric_mds, "mds_with_info", no_mds)
    again = _run(archive, root)
    assert json.loads(again.attrs["mds_unchanged"]) == {"ps": True}
    for k, (X, sigma) in _stored(root).items():
        np.testing.assert_array_equal(X, stored[k][0])
        assert sigma == stored[k][1]
    np.testing.assert_array_equal(again.embedding.values, first.embedding.values)
    np.testing.assert_array_equal(again.stress.values, first.stress.values)
    np.testing.assert_array_equal(again.file_reason.values, first.file_reason.values)
    assert (again.file_last_seen.values >= first.file_last_seen.values).all()
    assert all(v for v in first.file_last_seen.values)


def test_new_distances_or_other_options_are_embedded_again(archive, tmp_path):
    root = tmp_path / "st"
    _run(archive, root)
    same = embed_stage.embed(root, descriptor="ps", n_components=DIMS)
    assert same["unchanged"]
    other = embed_stage.embed(root, descriptor="ps", n_components=DIMS, random_state=1)
    assert not other["unchanged"]
    # a distance block computed again (e.g. after a repair) changes the inputs
    st = open_store(root)
    key = sorted(st.done_keys("distances.ps"))[0]
    st.mark_done("distances.ps", key, st.done_keys("distances.ps")[key])
    assert not embed_stage.embed(root, descriptor="ps", n_components=DIMS)["unchanged"]


@pytest.mark.slow
def test_a_growth_run_does_not_depend_on_the_no_op_runs_before_it(archive, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(archive, a)  # run, grow
    _run(archive, b)  # run, no-op, no-op, grow
    _run(archive, b)
    _run(archive, b)
    _grow(archive)
    grown_a, grown_b = _run(archive, a), _run(archive, b)
    assert grown_a.sizes["image"] == grown_b.sizes["image"] == 12
    np.testing.assert_array_equal(grown_a.embedding.values, grown_b.embedding.values)
    np.testing.assert_array_equal(grown_a.stress.values, grown_b.stress.values)
    for k, (X, sigma) in _stored(a).items():
        np.testing.assert_array_equal(X, _stored(b)[k][0])
        assert sigma == _stored(b)[k][1]
