"""Scale and speed in the pipeline: sketched texture vectors and landmark MDS, vs oracles."""

import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.spatial.distance import cdist

from flows import features as features_flow
from flows.params import PipelineParams
from microscale import store as st
from microscale.metric_mds import mds_with_info, stress
from microscale.sketch import sketch
from microscale.stages import _runner as runner
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.store import StoreError
from microscale.testing.stores import S
from microscale.testing.stores import fill as _fill
from microscale.testing.stores import make as _make
from microscale.testing.stores import random_images as _images


def _fit(D, n_components, **kwargs):
    """(embedding, info) of one dimension, or ({k: X}, {k: info}) of several."""
    fit = mds_with_info(D, n_components, **kwargs)
    if isinstance(n_components, int):
        return fit.embeddings[n_components], fit.info[n_components]
    return fit.embeddings, fit.info


ONE_LAYER = ("conv1_1",)  # 2080 features: fast fake-weights tests
K = 256  # sketch length: 2080 / 256 ~ 8x smaller


def _stripes(n, seed):
    """n one-tile images of noisy stripes (an angle and a frequency): a 2-D family."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:S, 0:S]
    out = []
    for _ in range(n):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(1.5, 4.0)
        phase = 2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) / S
        tile = 0.5 + 0.4 * np.sin(phase) + 0.05 * rng.standard_normal((S, S))
        out.append((tile[None].astype(np.float32), np.array([float(S * S)])))
    return out


def _bytes(root: Path, name: str) -> int:
    folder = root / st.GROUP_NAME / name
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- sketch


def test_sketched_features_are_the_sketch_of_the_full_features(tmp_path, fake_weights):
    images = _images(7, seed=1)
    cnn = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    full, small = _make(tmp_path / "full", images), _make(tmp_path / "small", images)
    for root, extra in ((full, {}), (small, {"sketch_dim": K, "sketch_seed": 3})):
        feat.run_features(root, **cnn, **extra)
        imf.image_features(root, descriptor="cnn", images_per_task=3)
    a, b = st.open_store(full), st.open_store(small)
    F = st.read_rows(a, "features/cnn")
    got = st.read_rows(b, "features/cnn")
    expected = sketch(F, n_components=K, seed=3, block=feat.SKETCH_BLOCK, device="cpu")
    assert got.shape == (b.n_tiles, K) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # Image features: the weighted mean of sketches is the sketch of the weighted mean.
    G = st.read_rows(a, "image_features/cnn")
    np.testing.assert_allclose(
        st.read_rows(b, "image_features/cnn"),
        sketch(G, n_components=K, seed=3, device="cpu"),
        rtol=1e-4,
        atol=1e-5 * np.abs(expected).max(),
    )
    setting = {"n_components": K, "seed": 3, "input_dim": 2080, "block": feat.SKETCH_BLOCK}
    for name in ("features/cnn", "image_features/cnn"):
        assert st.array_attrs(b, name)["sketch"] == setting
        assert st.array_attrs(a, name)["sketch"] is None
    # Only the sketch is stored: the features take 2080 / 256 ~ 8x less disk.
    assert _bytes(small, "features/cnn") * 7 < _bytes(full, "features/cnn")


def test_a_grown_sketched_store_equals_a_fresh_one(tmp_path, fake_weights):
    old, new = _images(3, seed=2, max_tiles=1), _images(4, seed=3, max_tiles=1)
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER,
              "device": "cpu", "sketch_dim": K}  # fmt: skip
    grown = _make(tmp_path / "grown", old, features_chunk=5)  # 3 of 5 rows: partial chunk
    feat.run_features(grown, **kwargs)
    _fill(st.open_store(grown), new)
    assert feat.run_features(grown, **kwargs).computed == 2  # the partial chunk and a new one
    clean = _make(tmp_path / "clean", old + new, features_chunk=5)
    feat.run_features(clean, **kwargs)
    np.testing.assert_array_equal(
        st.read_rows(st.open_store(grown), "features/cnn"),
        st.read_rows(st.open_store(clean), "features/cnn"),
    )


def test_distances_and_embedding_of_a_sketched_store(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(13, seed=4, max_tiles=2))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER,
                    device="cpu", sketch_dim=K, sketch_seed=5)  # fmt: skip
    imf.image_features(root, descriptor="cnn", images_per_task=4)
    dist.run_distances(root, descriptor="cnn", block_size=5, device="cpu")
    store = st.open_store(root)
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    assert F.shape == (13, K)
    D = st.read_rows(store, "distances/cnn")
    np.testing.assert_allclose(D, cdist(F, F), rtol=1e-6, atol=0)
    assert st.array_attrs(store, "distances/cnn")["sketch"]["n_components"] == K
    res = emb.embed(root, descriptor="cnn", n_components=[2], device="cpu", save=False)
    assert res["stress"][2] == pytest.approx(stress(D, res["embeddings"][2]), rel=1e-9)


def test_only_texture_vectors_longer_than_the_sketch_are_sketched(tmp_path, fake_weights):
    root = _make(tmp_path / "s", _images(3, seed=6))
    feat.run_features(root, descriptor="ps", sketch_dim=64)  # 256 > 64, but the baseline
    store = st.open_store(root)
    assert st.array_shape(store, "features/ps") == (store.n_tiles, S * S)
    assert st.array_attrs(store, "features/ps")["sketch"] is None
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER,
                    device="cpu", sketch_dim=4096)  # fmt: skip
    assert st.array_shape(store, "features/cnn") == (store.n_tiles, 2080)
    assert st.array_attrs(store, "features/cnn")["sketch"] is None


def test_a_store_keeps_its_sketch_setting(tmp_path, fake_weights):
    kwargs = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    root = _make(tmp_path / "s", _images(3, seed=7))
    feat.run_features(root, sketch_dim=K, **kwargs)
    stored = r"stored setting \(sketch_dim=256, sketch_seed=0\), or write this one to a new"
    with pytest.raises(StoreError, match=f"s.*holds sketches .* asks for full vectors.*{stored}"):
        feat.run_features(root, **kwargs)
    with pytest.raises(StoreError, match=f"asks for sketches .* 128 dimensions.*{stored}"):
        feat.run_features(root, sketch_dim=128, **kwargs)
    with pytest.raises(StoreError, match=f"\\(seed 1, .*{stored}"):
        feat.run_features(root, sketch_dim=K, sketch_seed=1, **kwargs)
    assert feat.run_features(root, sketch_dim=K, **kwargs).computed == 0

    whole = _make(tmp_path / "whole", _images(3, seed=7))
    feat.run_features(whole, **kwargs)
    with pytest.raises(StoreError, match=r"holds full vectors .*\(sketch_dim=None\)"):
        feat.run_features(whole, sketch_dim=K, **kwargs)
    with pytest.raises(ValueError, match="'sketch_dim' parameter must be a positive int"):
        feat.run_features(whole, sketch_dim=0, **kwargs)
    with pytest.raises(ValueError, match="'sketch_seed' parameter must be a non-negative int"):
        feat.run_features(whole, sketch_seed=-1, **kwargs)


def test_flow_parameters_reach_the_library(tmp_path, monkeypatch):
    params = PipelineParams(archive=tmp_path, store=tmp_path / "s", sketch_dim=2048,
                            sketch_seed=9, landmarks=500, max_dense=1000)  # fmt: skip
    dumped = params.model_dump(mode="json")  # what the results' provenance records
    assert {k: dumped[k] for k in ("sketch_dim", "sketch_seed", "landmarks", "max_dense")} == {
        "sketch_dim": 2048, "sketch_seed": 9, "landmarks": 500, "max_dense": 1000,
    }  # fmt: skip
    defaults = PipelineParams(archive=tmp_path, store=tmp_path)
    assert (defaults.sketch_dim, defaults.sketch_seed) == (None, 0)
    assert (defaults.landmarks, defaults.max_dense) == (None, emb.DENSE_LIMIT)
    with pytest.raises(ValidationError, match="sketch_dim"):
        PipelineParams(archive=tmp_path, store=tmp_path, sketch_dim=0)
    with pytest.raises(ValidationError, match="sketch_seed"):
        PipelineParams(archive=tmp_path, store=tmp_path, sketch_seed=-1)
    with pytest.raises(ValidationError, match=r"landmarks \(5\) must exceed every MDS dim"):
        PipelineParams(archive=tmp_path, store=tmp_path, landmarks=5)

    seen = {}
    monkeypatch.setattr(features_flow, "cluster_client", lambda **kw: nullcontext(None))
    monkeypatch.setattr(features_flow._progress, "progress", lambda *a: None)
    monkeypatch.setattr(
        features_flow.tile_stage, "run_features", lambda root, **kw: seen.update(kw) or _counts()
    )
    monkeypatch.setattr(features_flow.image_stage, "image_features", lambda root, **kw: _counts())
    features_flow.tile_features.fn(params, "cnn", None)
    assert seen["sketch_dim"] == 2048 and seen["sketch_seed"] == 9


def _counts():
    return runner.StageCounts(computed=1, skipped=0)


# --------------------------------------------------------------------------- landmark MDS


@pytest.fixture(scope="module")
def stripes_store(tmp_path_factory):
    """80 images of stripes, power spectra, distances in blocks of 16."""
    root = _make(tmp_path_factory.mktemp("stripes") / "s", _stripes(80, seed=8))
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=16)
    dist.run_distances(root, descriptor="ps", block_size=16)
    return root


def test_landmark_embed_reports_the_stress_of_the_full_matrix(stripes_store, monkeypatch):
    D = st.read_rows(st.open_store(stripes_store), "distances/ps")
    dense = emb.embed(stripes_store, descriptor="ps", n_components=[2, 3], device="cpu", save=False)
    reads = []
    real = emb.read_rows

    def spy(store, name, start=0, stop=None, **kwargs):
        reads.append((name, start, stop))
        return real(store, name, start, stop, **kwargs)

    monkeypatch.setattr(emb, "read_rows", spy)
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2, 3], device="cpu", max_dense=50,
                   landmarks=30, save=False)  # fmt: skip
    assert res["method"] == "landmark" and res["n_landmarks"] == 30
    assert res["start"] == {2: "landmark", 3: "landmark"}
    for k in (2, 3):
        X = res["embeddings"][k]
        assert X.shape == (80, k)
        assert res["stress"][k] == pytest.approx(stress(D, X), rel=1e-9)  # the full matrix
        assert dense["stress"][k] <= res["stress"][k] + 1e-9
        assert res["stress"][k] < 1.5 * dense["stress"][k]  # the price: small
    # The matrix is only ever read a band (one row of 16-row chunks) at a time.
    bands = [(a, b) for name, a, b in reads if name == "distances/ps"]
    assert bands and all(b is not None and 0 < b - a <= 16 and a % 16 == 0 for a, b in bands)
    assert dense["method"] == "dense" and dense["n_landmarks"] is None


def test_landmark_embed_past_max_dense_is_saved(stripes_store):
    # n = 80 > max_dense: landmark MDS with min(DEFAULT_LANDMARKS, n) = 80 landmarks.
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2], device="cpu", max_dense=79)
    assert res["method"] == "landmark" and res["n_landmarks"] == 80
    store = st.open_store(stripes_store)
    D = st.read_rows(store, "distances/ps")
    assert res["stress"][2] == pytest.approx(stress(D, res["embeddings"][2]), rel=1e-9)
    np.testing.assert_array_equal(st.read_array(store, "embeddings/ps/d2"), res["embeddings"][2])
    attrs = st.array_attrs(store, "embeddings/ps/d2")
    assert attrs["method"] == "landmark" and attrs["n_landmarks"] == 80
    # The next run is rotated onto the stored map: same points, same place.
    again = emb.embed(stripes_store, descriptor="ps", n_components=[2], device="cpu", max_dense=79)
    np.testing.assert_allclose(again["embeddings"][2], res["embeddings"][2], atol=1e-9)


def test_dense_path_is_unchanged(stripes_store):
    D = st.read_rows(st.open_store(stripes_store), "distances/ps")
    res = emb.embed(stripes_store, descriptor="ps", n_components=[1, 2], device="cpu", max_dense=80,
                   init_from_previous=False, save=False)  # fmt: skip
    expected, infos = _fit(D, [1, 2], random_state=0, device="cpu")
    assert res["method"] == "dense" and res["n_landmarks"] is None
    for k in (1, 2):
        np.testing.assert_array_equal(res["embeddings"][k], expected[k])  # bit for bit
        assert res["stress"][k] == infos[k].stress


def test_landmark_options_are_checked(stripes_store):
    # more landmarks than images (a growing archive): all of them, no error
    res = emb.embed(stripes_store, descriptor="ps", n_components=[2], landmarks=81, save=False)
    assert res["method"] == "landmark" and res["n_landmarks"] == 80
    with pytest.raises(ValueError, match="dims up to 3 with 3 landmarks. Pass more landmarks"):
        emb.embed(stripes_store, descriptor="ps", n_components=[3], landmarks=3, save=False)
    with pytest.raises(ValueError, match="'max_dense' parameter must be a positive int"):
        emb.embed(stripes_store, descriptor="ps", n_components=[2], max_dense=0, save=False)


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_block_reader_gives_every_block_in_order_from_a_few_reused_buffers(ahead):
    """The kernel's pattern: a row block held across column blocks, each given back."""
    data = np.arange(40.0).reshape(20, 2)
    ranges = [(0, 4), (4, 8), (8, 12), (4, 8), (8, 12), (16, 20), (12, 15)]
    reads = []

    def read_into(r, out):
        reads.append(r)
        out[:] = data[r[0] : r[1]]

    buffers = set()
    with dist._BlockReader(read_into, ranges, width=2, dtype=np.float64, ahead=ahead) as reader:
        row = reader.take()  # held, like a row block
        np.testing.assert_array_equal(row, data[0:4])
        for a, b in ranges[1:]:
            block = reader.take()
            np.testing.assert_array_equal(block, data[a:b])
            buffers.add(block.__array_interface__["data"][0])
            reader.give_back(block)
    assert reads == ranges
    assert len(buffers) <= 1 + ahead  # the column blocks cycle through the spare buffers


def test_distance_tasks_give_the_same_matrix_with_and_without_read_ahead(
    tmp_path, monkeypatch, fake_weights
):
    root = _make(tmp_path / "st", _images(9, seed=4))  # 9 images, 9-27 tiles
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    X = st.read_rows(st.open_store(root), "features/cnn").astype(np.float64)
    out = {}
    for ahead in (0, 2):
        monkeypatch.setattr(dist, "READ_AHEAD", ahead)
        st.open_store(root).clear_done("tile_distances.cnn")
        dist.run_distances(root, level="tile", block_size=4)  # n is not a multiple of 4
        out[ahead] = st.read_rows(st.open_store(root), "tile_distances/cnn")
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[0], cdist(X, X), rtol=1e-6, atol=1e-9)


def test_block_reads_follow_the_kernel_order():
    pairs = [runner.BlockPair(i, j, (4 * i, 4 * i + 4), (4 * j, 4 * j + 4)) for i, j in
             [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]]  # fmt: skip
    assert dist._block_reads(pairs) == [(0, 4), (4, 8), (8, 12), (4, 8), (8, 12)]


def test_pipeline_runs_the_random_backbone_and_records_its_identity(tmp_path):
    """weights="random:3" through run_features: 524,800-long vectors (or their sketch),
    equal to texture_vectors of the same tiles, stamped with the backbone's sha256."""
    from microscale.backbones import describe_backbone
    from microscale.texture import texture_vectors

    images = _images(3, seed=11, max_tiles=1)
    root = _make(tmp_path / "r", images)
    feat.run_features(root, descriptor="cnn", weights="random:3", normalize=None, device="cpu")
    store = st.open_store(root)
    attrs = st.array_attrs(store, "features/cnn")
    assert attrs["layers"] == ["multiscale"]
    assert attrs["weights_sha256"] == describe_backbone("random:3").sha256
    assert attrs["weights_sha256"] != describe_backbone("random:4").sha256
    got = st.read_rows(store, "features/cnn")
    assert got.shape == (3, 524_800)
    tiles = np.concatenate([t for t, _ in images])
    want = texture_vectors(tiles, weights="random:3", normalize=None, device="cpu")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # the same store refuses another backbone's vectors
    with pytest.raises(StoreError, match="weights_sha256"):
        feat.run_features(root, descriptor="cnn", weights="random:4", normalize=None, device="cpu")


def test_distance_tasks_reuse_the_threads_buffers_and_the_stage_releases_them(
    tmp_path, fake_weights
):
    """Block buffers and kernel scratch outlive a task (no fresh pages for the next one)
    and are all freed when run_distances ends."""
    from microscale import scratch

    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    dist.run_distances(root, level="tile", block_size=4)
    assert scratch.held_bytes() == 0
    expected = st.read_rows(st.open_store(root), "tile_distances/cnn")
    store = st.open_store(root)
    store.clear_done("tile_distances.cnn")
    groups = dist._group_pairs(dist.plan_distance_blocks(store, level="tile"), 2)
    assert len(groups) >= 3
    held = []
    for group in groups[:2]:  # full groups: the same buffer sizes
        dist.compute_distance_blocks(root, group, level="tile", device="cpu")
        held.append(scratch.held_bytes())
    block = scratch.buffer("distance.block.0", (4, 2080), np.float32)
    dist.compute_distance_blocks(root, groups[2], level="tile", device="cpu")
    assert held[0] > 2 * 4 * 2080 * 4 and held[1] == held[0] == scratch.held_bytes()
    assert np.shares_memory(block, scratch.buffer("distance.block.0", (4, 2080), np.float32))
    dist.run_distances(root, level="tile", block_size=4)
    assert scratch.held_bytes() == 0
    np.testing.assert_array_equal(st.read_rows(st.open_store(root), "tile_distances/cnn"), expected)


@pytest.mark.slow
def test_distance_stage_releases_the_workers_scratch(tmp_path, fake_weights):
    from microscale import scratch
    from microscale.cluster import cluster_client

    root = _make(tmp_path / "st", _images(6, seed=5))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    with cluster_client(processes=True, n_workers=1, threads_per_worker=1) as client:
        dist.run_distances(root, level="tile", block_size=4, client=client)
        assert set(client.run(scratch.held_bytes).values()) == {0}
        store = st.open_store(root)
        store.clear_done("tile_distances.cnn")
        group = dist._group_pairs(dist.plan_distance_blocks(store, level="tile"), 2)[0]
        client.submit(dist.compute_distance_blocks, root, group, level="tile").result()
        assert min(client.run(scratch.held_bytes).values()) > 0  # the control: kept


# --------------------------------------------------------------------------- block size


@pytest.mark.parametrize("d, itemsize", [(305_888, 4), (2048, 4), (1 << 15, 8)])
def test_auto_block_size_is_the_largest_that_fits(d, itemsize):
    for memory in (1e8, 5e8, 1e9, 2e9, 4e9, 7e9, 8e9, 64e9):
        b = dist.auto_block_size(d, memory, itemsize=itemsize)
        budget = dist.BLOCK_MEMORY_FRACTION * memory
        larger = [s for s in dist.AUTO_BLOCK_SIZES if s > b]
        fits = dist.distance_task_bytes(b, d, itemsize) <= budget
        assert fits or b == dist.AUTO_BLOCK_SIZES[-1]
        assert all(dist.distance_task_bytes(s, d, itemsize) > budget for s in larger)
    assert dist.auto_block_size(305_888, 8e9) == 1024  # 3.2 GB tasks, measured
    assert dist.auto_block_size(305_888, 2e9) == 256


def test_task_memory_is_the_smallest_workers_share_per_thread():
    class Client:
        def scheduler_info(self, n_workers):
            assert n_workers == -1  # every worker, not the first few
            return {"workers": {
                "a": {"memory_limit": 8e9, "nthreads": 2},
                "b": {"memory_limit": 6e9, "nthreads": 1},
                "c": {"memory_limit": 0, "nthreads": 4},  # no limit: not a constraint
            }}  # fmt: skip

    assert dist._task_memory(Client()) == 4e9


def test_a_new_matrix_gets_the_automatic_block_size_and_keeps_it(
    tmp_path, monkeypatch, fake_weights
):
    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    d = 2080
    memory = 2 * dist.distance_task_bytes(6, d)  # a task of 6 rows fits, of 8 does not
    monkeypatch.setattr(dist, "AUTO_BLOCK_SIZES", (16, 8, 6, 4))
    monkeypatch.setattr(dist, "_task_memory", lambda client: memory)
    dist.run_distances(root, level="tile")
    store = st.open_store(root)
    assert st.array_chunks(store, "tile_distances/cnn") == (6, 6)
    monkeypatch.setattr(dist, "_task_memory", lambda client: 1e12)  # more memory later:
    assert dist.run_distances(root, level="tile").computed == 0  # the stored blocks stay
    assert st.array_chunks(store, "tile_distances/cnn") == (6, 6)
    X = st.read_rows(store, "features/cnn").astype(np.float64)
    np.testing.assert_allclose(
        st.read_rows(store, "tile_distances/cnn"), cdist(X, X), rtol=1e-6, atol=1e-9
    )


# --------------------------------------------------------------------------- precision


def test_bfloat16_features_are_texture_vectors_in_bfloat16_and_fixed_per_store(
    tmp_path, fake_weights
):
    from microscale.texture import texture_vectors

    images = _images(5, seed=2)
    cnn = {"descriptor": "cnn", "weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    fast, exact = _make(tmp_path / "fast", images), _make(tmp_path / "exact", images)
    feat.run_features(fast, precision="bfloat16", **cnn)
    feat.run_features(exact, **cnn)
    a, b = st.open_store(fast), st.open_store(exact)
    tiles = st.read_tiles(a, 0, a.n_tiles)
    got = st.read_rows(a, "features/cnn")
    expected = texture_vectors(tiles, weights=fake_weights, layers=ONE_LAYER, normalize=None,
                               device="cpu", precision="bfloat16")  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
    assert np.abs(got - st.read_rows(b, "features/cnn")).max() > 0  # the control
    assert st.array_attrs(a, "features/cnn")["precision"] == "bfloat16"
    assert "precision" not in st.array_attrs(b, "features/cnn")  # float32: as older stores
    imf.image_features(fast, descriptor="cnn", images_per_task=2)
    assert st.array_attrs(a, "image_features/cnn")["precision"] == "bfloat16"
    with pytest.raises(StoreError, match="computed in bfloat16, but this run asks for float32"):
        feat.run_features(fast, **cnn)
    with pytest.raises(StoreError, match="computed in float32, but this run asks for bfloat16"):
        feat.run_features(exact, precision="bfloat16", **cnn)
    a.clear_done("features.cnn")  # a batch to recompute, asked in the wrong precision
    batch = feat.plan_feature_batches(a)[0]
    with pytest.raises(StoreError, match="precision='bfloat16'"):
        feat.compute_feature_batch(fast, batch, **cnn)
    with pytest.raises(ValueError, match="'precision' parameter must be one of"):
        feat.run_features(_make(tmp_path / "bad", images), precision="fp16", **cnn)


def test_tile_level_centre_comes_from_the_image_sums_without_a_pass(
    tmp_path, monkeypatch, fake_weights
):
    """Texture vectors with image features done: no centre pass over the tiles, and the
    distances are exact all the same (any common centre gives them)."""
    root = _make(tmp_path / "st", _images(9, seed=4))
    feat.run_features(root, descriptor="cnn", weights=fake_weights, layers=ONE_LAYER, device="cpu")
    store = st.open_store(root)
    X = st.read_rows(store, "features/cnn").astype(np.float64)
    centre_reads, inside = [], []
    real_read, real_centre = dist.read_rows, dist._ensure_center

    def read_spy(s, name, *args, **kwargs):
        if inside:
            centre_reads.append(name)
        return real_read(s, name, *args, **kwargs)

    def centre_spy(*args, **kwargs):
        inside.append(True)
        try:
            return real_centre(*args, **kwargs)
        finally:
            inside.clear()

    monkeypatch.setattr(dist, "read_rows", read_spy)
    monkeypatch.setattr(dist, "_ensure_center", centre_spy)
    dist.run_distances(root, level="tile", block_size=4)  # no image features: a pass
    assert centre_reads == ["features/cnn"] * len(range(0, store.n_tiles, 5))
    np.testing.assert_allclose(st.read_array(store, "tile_center/cnn"), X.mean(axis=0))
    imf.image_features(root, descriptor="cnn", images_per_task=4)
    store.clear_done("tile_distances.cnn")
    shutil.rmtree(root / st.GROUP_NAME / "tile_center")
    centre_reads.clear()
    dist.run_distances(root, level="tile", block_size=4)
    assert set(centre_reads) == {"image_feature_sums/cnn"}  # no tile rows read
    F = st.read_rows(store, "image_features/cnn").astype(np.float64)
    np.testing.assert_allclose(st.read_array(store, "tile_center/cnn"), F.mean(axis=0))
    D = st.read_rows(store, "tile_distances/cnn")
    np.testing.assert_allclose(D, cdist(X, X), rtol=1e-6, atol=1e-9)


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
