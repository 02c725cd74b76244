"""Querying a store by texture (microscale.search), against brute-force oracles."""

import json
import shutil

import numpy as np
import pytest
import tifffile
from scipy.spatial.distance import cdist

from microscale import pipeline as pl
from microscale import search
from microscale import store as st
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.manifold import mds, out_of_sample
from microscale.sketch import sketch
from microscale.store import IncompleteStageError
from microscale.synth import texture
from microscale.weights import BGR_MEAN, VGGWeights

ONE_LAYER = ("conv1_1",)  # 2080 features: fast fake-weights tests
DIMS = (1, 2, 3)


def _fake_weights(seed=7, sha="fake-" + "0" * 59):
    rng = np.random.default_rng(seed)
    params = {
        "conv1_1.weight": (0.05 * rng.standard_normal((64, 3, 3, 3))).astype(np.float32),
        "conv1_1.bias": (0.1 * rng.standard_normal(64)).astype(np.float32),
    }
    return VGGWeights(params, np.array(BGR_MEAN), sha256=sha, source="test")


@pytest.fixture(scope="module")
def fake_weights():
    return _fake_weights()


@pytest.fixture(scope="module")
def archive_store(tmp_path_factory, fake_weights):
    """A demo archive through every stage, both descriptors; embeddings in 1-3 dimensions."""
    root = tmp_path_factory.mktemp("search")
    archive = write_demo_archive(root / "archive", n=12, size=48, seed=3)
    store = root / "store"
    ingest_archive(archive, store, tile_size=32, normalize="minmax")
    for d in ("ps", "cnn"):
        features = {"weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
        pl.run_features(store, descriptor=d, **(features if d == "cnn" else {}))
        pl.image_features(store, descriptor=d, images_per_task=4)
        pl.run_distances(store, descriptor=d, block_size=5, device="cpu")
        pl.embed(store, descriptor=d, n_components=DIMS, device="cpu", eps=1e-9, max_iter=3000)
    return archive, store


@pytest.fixture(scope="module")
def query(tmp_path_factory):
    """A micrograph that is not in the archive: other texture, other shape (tiles padded)."""
    path = tmp_path_factory.mktemp("query") / "query.tif"
    phi = texture(0.7, 9, 1.2, size=72, seed=11)[:, :56]
    tifffile.imwrite(path, np.rint((phi + 1) / 2 * 65535).astype(np.uint16))
    return path


def _archive_file(archive, store, index):
    path = str(st.image_table(st.open_store(store), index, index + 1)["image_path"][0])
    rel, _, page = path.partition("#")
    return archive / rel, int(page or 0)


def _brute_force(store, descriptor, vector):
    rows = st.read_rows(st.open_store(store), f"image_features/{descriptor}")  # all at once
    return cdist(vector[None].astype(np.float64), rows.astype(np.float64))[0]


# --------------------------------------------------------------------------- the search


@pytest.mark.parametrize("descriptor", ["ps", "cnn"])
def test_neighbours_equal_brute_force(archive_store, query, fake_weights, descriptor):
    _, store = archive_store
    res = search.similar(
        query, store, k=5, descriptor=descriptor, weights=fake_weights, device="cpu"
    )
    q = search.query_vector(query, store, descriptor=descriptor, weights=fake_weights, device="cpu")
    expected = _brute_force(store, descriptor, q.vector)
    order = np.argsort(expected, kind="stable")[:5]
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_allclose(res.distances, expected[order], rtol=1e-6)
    assert res.in_archive is None and q.archive_index is None and q.n_tiles == 6
    table = st.image_table(st.open_store(store))
    assert list(res.paths) == [str(p) for p in table["image_path"][order]]
    assert list(res.image_ids) == [str(i) for i in table["image_id"][order]]
    assert sorted(res.positions) == list(DIMS)
    assert all(res.positions[k].shape == (k,) for k in DIMS)


@pytest.mark.parametrize("descriptor", ["ps", "cnn"])
def test_query_is_prepared_and_described_as_the_archive_was(
    archive_store, fake_weights, descriptor
):
    archive, store = archive_store
    for index in (0, 7):  # a page of the multi-page stack, and a single-image file
        path, page = _archive_file(archive, store, index)
        q = search.query_vector(
            path, store, descriptor=descriptor, page=page, weights=fake_weights,
            device="cpu", reuse=False,
        )  # fmt: skip
        stored = st.read_rows(
            st.open_store(store), f"image_features/{descriptor}", index, index + 1
        )
        assert q.archive_index == index and q.n_tiles > 0
        assert q.vector.dtype == stored.dtype
        np.testing.assert_allclose(q.vector, stored[0], rtol=1e-5, atol=1e-7 * np.abs(stored).max())


def test_reads_the_features_band_by_band(archive_store, query, monkeypatch):
    _, store = archive_store
    whole = search.similar(query, store, k=12, descriptor="ps", device="cpu", place=False)
    reads = []
    real = search.read_rows

    def spy(store_, name, start=0, stop=None):
        out = real(store_, name, start, stop)
        if name.startswith("image_features/"):
            reads.append(len(out))
        return out

    monkeypatch.setattr(search, "read_rows", spy)
    banded = search.similar(
        query, store, k=12, descriptor="ps", device="cpu", band_size=5, place=False
    )
    assert reads and max(reads) <= 5 and sum(reads) == 12
    np.testing.assert_array_equal(banded.indices, whole.indices)
    np.testing.assert_allclose(banded.distances, whole.distances, rtol=1e-12)
    assert banded.positions == {}


@pytest.mark.parametrize("descriptor", ["ps", "cnn"])
def test_a_query_from_the_archive_is_rank_one_at_distance_zero(
    archive_store, fake_weights, descriptor
):
    archive, store = archive_store
    index = 7
    path, page = _archive_file(archive, store, index)
    res = search.similar(
        path, store, k=3, descriptor=descriptor, page=page, weights=fake_weights, device="cpu"
    )
    assert res.in_archive == index and res.indices[0] == index and res.distances[0] == 0.0
    assert res.query_id == str(st.image_table(st.open_store(store))["image_id"][index])
    for k in DIMS:  # its position is its own
        Y = st.read_array(st.open_store(store), f"embeddings/{descriptor}/d{k}")
        np.testing.assert_array_equal(res.positions[k], Y[index])


@pytest.mark.parametrize("descriptor", ["ps", "cnn"])
def test_placing_archive_images_returns_their_stored_coordinates(archive_store, descriptor):
    """The placement oracle on the store's own distances and embeddings."""
    _, store = archive_store
    s = st.open_store(store)
    D = st.read_rows(s, f"distances/{descriptor}")
    for k in DIMS:
        Y = st.read_array(s, f"embeddings/{descriptor}/d{k}")
        placed = out_of_sample(D, Y)

        def own_stress(X, Y=Y):
            return ((D - cdist(X, Y)) ** 2).sum(axis=1)

        # never worse than the stored coordinates for the point alone ...
        assert (own_stress(placed) <= own_stress(Y) * (1 + 1e-9) + 1e-12).all()
        if k > 1:  # ... and, where SMACOF's optimum is one for each point, the same place
            np.testing.assert_allclose(placed, Y, atol=1e-3 * np.abs(Y).max())


@pytest.mark.gpu
def test_the_gpu_finds_the_same_neighbours(archive_store, query, fake_weights):
    _, store = archive_store
    options = {"k": 6, "descriptor": "cnn", "weights": fake_weights}
    cpu = search.similar(query, store, device="cpu", **options)
    gpu = search.similar(query, store, device="cuda", **options)
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.distances, cpu.distances, rtol=1e-5)
    np.testing.assert_allclose(gpu.positions[2], cpu.positions[2], rtol=1e-4, atol=1e-8)


def test_pages_of_a_multipage_query(archive_store):
    archive, store = archive_store
    path = archive / "tem" / "tilt_series" / "stack.tif"
    ids = [search.similar(path, store, k=1, descriptor="ps", page=p, place=False) for p in range(3)]
    assert [r.in_archive for r in ids] == [r.indices[0] for r in ids]
    assert len({r.query_id for r in ids}) == 3 and all("#p" in r.query_id for r in ids)
    with pytest.raises(ValueError, match="'page' parameter must be < 3"):
        search.similar(path, store, descriptor="ps", page=3)


# --------------------------------------------------------------------------- placement


def test_out_of_sample_recovers_euclidean_points_exactly():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3))
    new = rng.normal(size=(5, 3))
    for n_refine in (0, 50):
        placed = out_of_sample(cdist(new, points), points, n_refine=n_refine)
        np.testing.assert_allclose(placed, new, atol=1e-8)


def test_out_of_sample_of_an_embedded_point_returns_its_coordinates_and_lowers_stress():
    rng = np.random.default_rng(1)
    D = cdist(*(2 * [rng.normal(size=(60, 6))]))
    Y = mds(D, 2, random_state=0, device="cpu", eps=1e-12, max_iter=5000)
    placed = out_of_sample(D, Y)
    np.testing.assert_allclose(placed, Y, atol=1e-3 * np.abs(Y).max())
    start = out_of_sample(D, Y, n_refine=0)

    def own_stress(X):
        return np.sqrt(((D - cdist(X, Y)) ** 2).sum(axis=1) / (D**2).sum(axis=1))

    assert (own_stress(placed) <= own_stress(start) + 1e-12).all()
    assert own_stress(placed).mean() < own_stress(start).mean()


def test_placed_query_stress_is_no_worse_than_its_triangulation(archive_store, query):
    _, store = archive_store
    res = search.similar(query, store, k=12, descriptor="ps", device="cpu")
    r = np.empty(12)
    r[res.indices] = res.distances
    for k in DIMS:
        Y = st.read_array(st.open_store(store), f"embeddings/ps/d{k}")
        start = out_of_sample(r[None], Y, n_refine=0)[0]

        def stress_of(x, Y=Y):
            return np.sqrt(((r - cdist(x[None], Y)[0]) ** 2).sum() / (r**2).sum())

        assert stress_of(res.positions[k]) <= stress_of(start) + 1e-12
        assert res.placement_stress[k] == pytest.approx(stress_of(res.positions[k]), rel=1e-9)


def test_out_of_sample_validates_its_input():
    Y = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"shape \(n_points, 4\)"):
        out_of_sample(np.ones((1, 3)), Y)
    with pytest.raises(ValueError, match="non-negative entries|negative entries"):
        out_of_sample(-np.ones((1, 4)), Y)
    with pytest.raises(ValueError, match="'n_refine' parameter must be a non-negative int"):
        out_of_sample(np.ones((1, 4)), Y, n_refine=-1)
    with pytest.raises(ValueError, match="'delta_mean' array must hold 4"):
        out_of_sample(np.ones((1, 4)), Y, delta_mean=np.ones(3))


# --------------------------------------------------------------------------- sketches


def test_sketched_store_sketches_the_query(archive_store, query, tmp_path):
    """A store whose image features are sketches (attribute "sketch"): the query is too."""
    _, store = archive_store
    copy = tmp_path / "sketched"
    shutil.copytree(store, copy)
    s = st.open_store(copy)
    full = st.read_rows(s, "image_features/ps")
    spec = {"n_components": 64, "seed": 5, "input_dim": full.shape[1], "block": 256}
    sketched = sketch(full, n_components=64, seed=5, block=256, device="cpu").astype(np.float64)
    attrs = {**st.array_attrs(s, "image_features/ps"), "sketch": spec}
    st.write_array(s, "image_features/ps", sketched, attrs=attrs)
    groups = st.array_attrs(s, "image_feature_sums/ps")
    sums = np.array([sketched[i : i + 4].sum(axis=0) for i in range(0, 12, 4)])
    st.write_array(s, "image_feature_sums/ps", sums, attrs=groups)
    st.write_array(s, "center/ps", sketched.mean(axis=0), attrs={"n_images": 12})
    D = cdist(sketched, sketched)
    for k in DIMS:
        st.write_array(s, f"embeddings/ps/d{k}", mds(D, k, random_state=0, device="cpu"))

    res = search.similar(query, copy, k=4, descriptor="ps", device="cpu")
    q_full = search.query_vector(query, store, descriptor="ps").vector
    q_sketch = sketch(q_full[None], n_components=64, seed=5, block=256, device="cpu")[0]
    expected = cdist(q_sketch[None].astype(np.float64), sketched)[0]
    order = np.argsort(expected, kind="stable")[:4]
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_allclose(res.distances, expected[order], rtol=1e-5)
    assert res.sketch == spec and sorted(res.positions) == list(DIMS)


def test_store_sketched_by_the_pipeline(archive_store, query, fake_weights, tmp_path):
    """End to end: run_features(sketch_dim=...) and a query of the same sketch."""
    archive, full_store = archive_store
    store = tmp_path / "sketched"
    ingest_archive(archive, store, tile_size=32, normalize="minmax")
    features = {"weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    pl.run_features(store, descriptor="cnn", sketch_dim=64, sketch_seed=3, **features)
    pl.image_features(store, descriptor="cnn", images_per_task=4)
    pl.run_distances(store, descriptor="cnn", block_size=5, device="cpu")
    pl.embed(store, descriptor="cnn", n_components=(2,), device="cpu")
    spec = st.array_attrs(st.open_store(store), "image_features/cnn")["sketch"]
    assert spec["n_components"] == 64

    res = search.similar(query, store, k=5, descriptor="cnn", weights=fake_weights, device="cpu")
    assert res.sketch == spec and sorted(res.positions) == [2]
    # the query's vector is the sketch of its full vector (a linear map of the mean)
    full = search.query_vector(query, full_store, weights=fake_weights, device="cpu").vector
    expected_q = sketch(
        full[None], n_components=64, seed=spec["seed"], block=spec["block"], device="cpu"
    )[0]
    got_q = search.query_vector(query, store, weights=fake_weights, device="cpu").vector
    np.testing.assert_allclose(got_q, expected_q, rtol=1e-5, atol=1e-6 * np.abs(expected_q).max())
    expected = _brute_force(store, "cnn", got_q)
    order = np.argsort(expected, kind="stable")[:5]
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_allclose(res.distances, expected[order], rtol=1e-6)
    # an archive file described again lands on its stored sketch
    path, page = _archive_file(archive, store, 7)
    again = search.query_vector(path, store, page=page, weights=fake_weights, device="cpu",
                                reuse=False)  # fmt: skip
    stored = st.read_rows(st.open_store(store), "image_features/cnn", 7, 8)[0]
    np.testing.assert_allclose(again.vector, stored, rtol=1e-5, atol=1e-6 * np.abs(stored).max())


# --------------------------------------------------------------------------- errors


def test_weights_other_than_the_stores_are_refused(archive_store, query):
    _, store = archive_store
    other = _fake_weights(seed=8, sha="other-" + "0" * 58)
    with pytest.raises(search.WeightsMismatchError, match="sha256 fake-0+.*other-0+"):
        search.similar(query, store, descriptor="cnn", weights=other, device="cpu")


def test_a_store_without_features_or_embeddings_says_what_to_run(archive_store, query, tmp_path):
    archive, _ = archive_store
    bare = tmp_path / "bare"
    ingest_archive(archive, bare, tile_size=32, normalize="minmax")
    with pytest.raises(
        IncompleteStageError, match="no complete 'ps' image features.*microscale run"
    ):
        search.similar(query, bare, descriptor="ps")
    pl.run_features(bare, descriptor="ps")
    pl.image_features(bare, descriptor="ps")
    with pytest.raises(IncompleteStageError, match="no 'ps' embedding.*place=False"):
        search.similar(query, bare, descriptor="ps")
    assert search.similar(query, bare, k=2, descriptor="ps", place=False).positions == {}


def test_invalid_queries_and_options(archive_store, tmp_path):
    _, store = archive_store
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not an image in a format microscale reads"):
        search.similar(text, store, descriptor="ps")
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((40, 40), 7, np.uint16))
    with pytest.raises(ValueError, match="cannot be described as the archive was: constant"):
        search.similar(flat, store, descriptor="ps")
    with pytest.raises(ValueError, match="'k' parameter must be an int >= 1"):
        search.similar(flat, store, k=0)
    with pytest.raises(ValueError, match="'descriptor' parameter must be one of"):
        search.similar(flat, store, descriptor="gram")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        search.similar(tmp_path / "missing.tif", store, descriptor="ps")


def test_to_dataset_labels_the_result(archive_store, query):
    _, store = archive_store
    ds = search.similar(query, store, k=3, descriptor="ps", device="cpu").to_dataset()
    assert list(ds.neighbour.values) == [1, 2, 3]
    assert ds.distance.dims == ("neighbour",) and (np.diff(ds.distance.values) >= 0).all()
    assert ds.position_d2.dims == ("component_d2",)
    assert ds.attrs["in_archive"] == -1 and ds.attrs["query"] == str(query)


# --------------------------------------------------------------------------- command line


def test_cli_prints_a_ranked_table_and_the_2d_position(archive_store, query, capsys):
    from microscale.cli import main

    _, store = archive_store
    code = main(["similar", str(query), "--store", str(store), "-k", "3", "--descriptor", "ps",
                 "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    res = search.similar(query, store, k=3, descriptor="ps", device="cpu")
    lines = [line.split() for line in out.splitlines()]
    table = [line for line in lines if line and line[0] in {"1", "2", "3"}]
    assert [row[2] for row in table] == list(res.paths)
    assert [float(row[1]) for row in table] == pytest.approx(res.distances, rel=1e-5)
    assert "2-D position" in out


def test_cli_json(archive_store, query, capsys):
    from microscale.cli import main

    _, store = archive_store
    code = main(["similar", str(query), "--store", str(store), "--descriptor", "ps", "--json",
                 "--device", "cpu"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and len(data["neighbours"]) == 10
    assert data["neighbours"][0]["rank"] == 1 and set(data["positions"]) == {"1", "2", "3"}


def test_cli_errors_say_which_command_to_run(archive_store, query, tmp_path, capsys):
    from microscale.cli import main

    archive, _ = archive_store
    bare = tmp_path / "bare"
    ingest_archive(archive, bare, tile_size=32, normalize="minmax")
    code = main(["similar", str(query), "--store", str(bare), "--descriptor", "ps"])
    err = capsys.readouterr().err
    assert code != 0 and "microscale run" in err and "image features" in err
    code = main(["similar", str(query), "--store", str(tmp_path / "nothing")])
    assert code != 0 and "microscale similar: error" in capsys.readouterr().err


# --------------------------------------------------------------------------- the flow


@pytest.mark.slow
def test_flow_publishes_the_neighbours(archive_store, query):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    from flows._progress import artifact_key
    from flows.similar import SimilarParams
    from flows.similar import similar as similar_flow

    _, store = archive_store
    params = SimilarParams(image=query, store=store, k=4, descriptor="ps", device="cpu")
    with prefect_test_harness(server_startup_timeout=120):
        out = similar_flow(params)
        with get_client(sync_client=True) as client:
            (artifact,) = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[artifact_key("similar-neighbours", store)])
                )
            )
    res = search.similar(query, store, k=4, descriptor="ps", device="cpu")
    assert [r["path"] for r in out["neighbours"]] == list(res.paths)
    assert out["positions"][2] == pytest.approx(res.positions[2].tolist())
    table = json.loads(artifact.data)
    assert [row["path"] for row in table] == list(res.paths)
    assert [row["rank"] for row in table] == [1, 2, 3, 4]


def test_cli_missing_optional_reader_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from microscale.cli import main

    hint = "'x.dm4' is a Gatan DigitalMicrograph (DM3/DM4) file; reading it needs rosettasciio"

    def no_reader(*args, **kwargs):
        raise ImportError(hint)

    monkeypatch.setattr(search, "similar", no_reader)
    assert main(["similar", str(tmp_path / "x.dm4"), "--store", str(tmp_path)]) == 2
    assert hint in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    monkeypatch.setattr(search, "similar", bug)
    with pytest.raises(ModuleNotFoundError):  # our own missing module is a bug: not hidden
        main(["similar", str(tmp_path / "x.dm4"), "--store", str(tmp_path)])


def test_store_in_bfloat16_is_queried_in_bfloat16(archive_store, fake_weights, tmp_path):
    """A query is described in the store's texture precision: an archive file lands on its
    stored bfloat16 row, not on its float32 vector."""
    archive, full_store = archive_store
    store = tmp_path / "bf16"
    ingest_archive(archive, store, tile_size=32, normalize="minmax")
    features = {"weights": fake_weights, "layers": ONE_LAYER, "device": "cpu"}
    pl.run_features(store, descriptor="cnn", precision="bfloat16", **features)
    pl.image_features(store, descriptor="cnn", images_per_task=4)
    path, page = _archive_file(archive, store, 7)
    again = search.query_vector(path, store, page=page, weights=fake_weights, device="cpu",
                                reuse=False)  # fmt: skip
    stored = st.read_rows(st.open_store(store), "image_features/cnn", 7, 8)[0]
    exact = search.query_vector(path, full_store, page=page, weights=fake_weights,
                                device="cpu", reuse=False).vector  # fmt: skip
    np.testing.assert_allclose(again.vector, stored, rtol=1e-5, atol=1e-6 * np.abs(stored).max())
    assert np.abs(exact - stored).max() > 1e-4 * np.abs(stored).max()  # the control
