"""Progress of the features stage within a feature batch: tiles counted per forward pass.

One batch holds every tile, so a count strictly between 0 and N can only come from inside
the running task; each report also checks that the batch is not recorded yet.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from microscale import store as st
from microscale import texture
from microscale.stages import _unit_progress
from microscale.stages import features as feat
from microscale.testing.faults import Sabotage, worker_processes
from microscale.testing.stores import S
from microscale.testing.stores import make as _make
from tests.stages.helpers import ONE_LAYER

N = 8  #: tiles of the store: 4 images of 2 tiles, all in one feature batch


def _store(path):
    rng = np.random.default_rng(5)
    images = [(rng.random((2, S, S)).astype(np.float32), np.full(2, 100.0)) for _ in range(4)]
    return _make(path, images, features_chunk=64)


def _recorder(root):
    """on_done that keeps (done, total, the batch recorded at that moment)."""
    seen = []

    def on_done(done, total):
        recorded = bool(st.open_store(root).done_keys("features.cnn"))
        seen.append((done, total, recorded))

    return seen, on_done


def _run(root, fake_weights, **kwargs):
    return feat.run_features(
        root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu",
        batch_size=1, **kwargs,
    )  # fmt: skip


def _check_within(seen, *, at_least):
    done = [d for d, _, _ in seen]
    assert {t for _, t, _ in seen} == {N}  # the count is in tiles
    assert done[0] == 0 and done[-1] == N
    assert all(a < b for a, b in zip(done, done[1:], strict=False)), done  # never backwards
    inside = [(d, recorded) for d, _, recorded in seen if 0 < d < N]
    assert len(inside) >= at_least, done
    assert not any(recorded for _, recorded in inside)  # reported while the batch ran
    assert seen[-1][2]  # N only once the batch is written and recorded


@pytest.fixture
def slow_passes(monkeypatch):
    """Each forward pass takes 0.15 s (the Gram step; in-process workers see the patch)."""
    gram = texture.gram_vectors

    def slow(*args, **kwargs):
        time.sleep(0.15)
        return gram(*args, **kwargs)

    monkeypatch.setattr(texture, "gram_vectors", slow)


def test_in_process_every_forward_pass_moves_the_count(tmp_path, fake_weights, monkeypatch):
    monkeypatch.setattr(_unit_progress, "REPORT_EVERY_S", 0.0)
    root = _store(tmp_path / "s")
    seen, on_done = _recorder(root)
    counts = _run(root, fake_weights, on_done=on_done)
    assert counts.computed == 1
    assert [d for d, _, _ in seen] == list(range(N + 1))  # 0, one per tile, N when recorded
    _check_within(seen, at_least=N - 1)


def test_in_process_reports_are_throttled(tmp_path, fake_weights, slow_passes, monkeypatch):
    monkeypatch.setattr(_unit_progress, "REPORT_EVERY_S", 0.4)
    root = _store(tmp_path / "s")
    seen, on_done = _recorder(root)
    _run(root, fake_weights, on_done=on_done)
    _check_within(seen, at_least=1)
    # 8 passes of 0.15 s: at most one report per 0.4 s within the batch, not one per pass
    assert len(seen) <= 2 + 4


def test_on_a_dask_cluster_events_move_the_count(tmp_path, fake_weights, slow_passes, monkeypatch):
    import distributed

    monkeypatch.setattr(_unit_progress, "REPORT_EVERY_S", 0.05)
    monkeypatch.setattr(_unit_progress, "SEND_EVERY_S", 0.0)
    root = _store(tmp_path / "s")
    seen, on_done = _recorder(root)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,  # fmt: skip
        distributed.Client(cluster) as client,
    ):
        _run(root, fake_weights, client=client, on_done=on_done)
        # the run's handler is gone; an event of a finished run changes nothing
        assert not _unit_progress._RECEIVERS
    _check_within(seen, at_least=3)
    expected = texture.texture_vectors(
        st.read_tiles(st.open_store(root)), weights=fake_weights, layers=ONE_LAYER,
        normalize=None, device="cpu",
    )  # fmt: skip
    got = st.read_rows(st.open_store(root), "features/cnn")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.slow
def test_a_worker_process_sends_its_counts(tmp_path, fake_weights):
    root = _store(tmp_path / "s")
    seen, on_done = _recorder(root)
    with worker_processes(
        Sabotage("microscale.texture", "gram_vectors", 0.3), n_workers=1
    ) as client:
        _run(root, fake_weights, client=client, on_done=on_done)
    # 8 passes of 0.3 s in the worker process, the library's own throttles (0.25 s, 0.5 s)
    _check_within(seen, at_least=2)


def test_power_spectra_count_tiles_per_batch(tmp_path):
    root = _store(tmp_path / "s")
    seen = []
    feat.run_features(root, descriptor="ps", on_done=lambda d, t: seen.append((d, t)))
    assert seen == [(0, N), (N, N)]  # no forward passes: the batch's end only
