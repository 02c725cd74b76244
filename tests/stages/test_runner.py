"""The stage runner (stages/_runner.py): order of stages, the store lock, the Dask path, work
units.
"""

import pickle

import numpy as np
import pytest

from microscale import store as st
from microscale.cluster import cluster_client
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import IncompleteStageError, StoreError
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images
from tests.stages.helpers import ONE_LAYER, all_stages

_SIZES: list[int] = []


def _record_size(batch_size):
    """An oom_hook that Dask pickles by reference, so calls land in this module's list."""
    _SIZES.append(batch_size)


def test_stages_refuse_to_run_out_of_order(tmp_path):
    root = _make(tmp_path / "s", _images(5, seed=14))
    with pytest.raises(IncompleteStageError, match="run run_features"):
        imf.image_features(root, descriptor="ps")
    feat.run_features(root, descriptor="ps")
    with pytest.raises(IncompleteStageError, match=r"run image_features\(descriptor='ps'\)"):
        dist.run_distances(root, descriptor="ps")
    imf.image_features(root, descriptor="ps")
    with pytest.raises(IncompleteStageError, match="run run_distances"):
        emb.embed(root, descriptor="ps")
    dist.run_distances(root, descriptor="ps", block_size=2)
    with pytest.raises(StoreError, match="stored in blocks of 2; pass block_size=2"):
        dist.run_distances(root, descriptor="ps", block_size=3)
    st.open_store(root).clear_done("distances.ps", "000000-000001")
    with pytest.raises(IncompleteStageError, match="1 unit.* distances.ps stage are not done"):
        emb.embed(root, descriptor="ps")


def test_a_stage_waits_for_no_one_while_another_run_holds_the_lock(tmp_path):
    import subprocess
    import sys
    import textwrap

    root = _make(tmp_path / "s", _images(3, seed=15))
    code = textwrap.dedent(
        f"""
        from microscale import pipeline
        from microscale.store import StoreLockedError
        try:
            pipeline.run_features({str(root)!r}, descriptor="ps")
        except StoreLockedError as exc:
            print("locked:", exc)
        """
    )
    with st.open_store(root).lock():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("locked: Another microscale run"), out.stderr


# --------------------------------------------------------------------------- Dask


def test_dask_path_equals_sequential(tmp_path):
    images = _images(17, seed=16)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    all_stages(sequential)
    progress = []
    with cluster_client(processes=False, n_workers=2, threads_per_worker=1) as client:
        feat.run_features(parallel, descriptor="ps", client=client)
        imf.image_features(parallel, descriptor="ps", client=client, images_per_task=4)
        counts = dist.run_distances(
            parallel,
            descriptor="ps",
            client=client,
            block_size=5,
            on_done=lambda done, total: progress.append((done, total)),
        )
    assert counts.computed == 10 and progress[0] == (0, 10) and progress[-1] == (10, 10)
    a, b = st.open_store(sequential), st.open_store(parallel)
    for name in ("features/ps", "image_features/ps", "distances/ps"):
        np.testing.assert_array_equal(st.read_rows(a, name), st.read_rows(b, name))


@pytest.mark.slow
def test_worker_processes_open_the_store_themselves(tmp_path):
    images = _images(7, seed=19)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    all_stages(sequential)
    with cluster_client(processes=True, n_workers=1, threads_per_worker=1) as client:
        all_stages(parallel, client=client)
    a, b = st.open_store(sequential), st.open_store(parallel)
    np.testing.assert_array_equal(st.read_rows(a, "distances/ps"), st.read_rows(b, "distances/ps"))


def test_dask_path_with_scattered_weights(tmp_path, fake_weights):
    images = _images(4, seed=17)
    sequential = _make(tmp_path / "seq", images)
    parallel = _make(tmp_path / "par", images)
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    feat.run_features(sequential, **kwargs)
    _SIZES.clear()
    with cluster_client(processes=False, n_workers=2, threads_per_worker=1) as client:
        feat.run_features(parallel, client=client, batch_size=3, oom_hook=_record_size, **kwargs)
    assert _SIZES == [3] * len(
        runner.row_ranges(st.open_store(parallel).n_tiles, 5)
    )  # options arrive
    np.testing.assert_allclose(
        st.read_rows(st.open_store(parallel), "features/cnn"),
        st.read_rows(st.open_store(sequential), "features/cnn"),
        rtol=1e-6,
    )


def test_work_units_are_picklable():
    batch = runner.Batch(3, 15, 20)
    pair = runner.BlockPair(1, 2, (5, 10), (10, 13))
    assert pickle.loads(pickle.dumps(batch)) == batch and batch.extent == {"rows": [15, 20]}
    assert pickle.loads(pickle.dumps(pair)) == pair and pair.key == "000001-000002"
    for func in (
        feat.compute_feature_batch,
        imf.compute_image_features,
        dist.compute_distance_blocks,
    ):
        assert pickle.loads(pickle.dumps(func)) is func
