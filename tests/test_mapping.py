import numpy as np
import pytest

from microscale import pipeline, synth
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.mapping import cluster_dimension, map_store, write_map
from microscale.results import read_dataset
from microscale.store import open_store, read_rows


def _mapped(archive, store, *, level):
    ingest_archive(archive, store, tile_size=32, normalize="minmax")
    pipeline.run_features(store, descriptor="ps")
    if level == "image":
        pipeline.image_features(store, descriptor="ps")
    pipeline.run_distances(store, descriptor="ps", block_size=8, level=level)
    return map_store(
        store, descriptors=["ps"], n_components=[1, 2, 3], archive=archive, level=level
    )


def test_image_map_with_ground_truth(tmp_path):
    archive = tmp_path / "demo"
    write_demo_archive(archive, n=10, size=32, seed=2)
    ds = _mapped(archive, tmp_path / "st", level="image")
    assert ds.sizes["image"] == open_store(tmp_path / "st").n_images
    assert {"theta", "k", "A", "image_path", "pixel_size_nm"} <= set(ds.coords)
    assert "r2" in ds and np.isfinite(ds.r2).all()
    statuses = dict(zip(ds.file.values, ds.file_status.values, strict=True))
    assert statuses["README.txt"] == "skipped"
    files = write_map(ds, tmp_path / "st")
    names = {f.name for f in files}
    assert {"map.zarr", "map.nc", "map.png", "map_stress_vs_dimension.png", "map.html"} <= names
    assert "map_montage.png" not in names  # ground truth: the map is coloured by it instead
    back = read_dataset(tmp_path / "st" / "results" / "map.nc").load()
    np.testing.assert_array_equal(back.embedding.values, ds.embedding.values)


def test_tile_map_without_ground_truth(tmp_path):
    import tifffile

    archive = tmp_path / "lab"
    (archive / "a").mkdir(parents=True)
    for i in range(5):
        phi = synth.texture(0.5 * i, 6.0, 1.0, size=64, seed=i)
        tifffile.imwrite(archive / "a" / f"s{i}.tif", ((phi + 1) * 1000).astype(np.uint16))
    ds = _mapped(archive, tmp_path / "st", level="tile")
    st = open_store(tmp_path / "st")
    assert ds.sizes["image"] == st.n_tiles == 20  # 4 tiles of 32 per 64x64 image
    assert ds.attrs["level"] == "tile" and "tile_origin_y" in ds.coords
    assert "r2" not in ds
    names = {f.name for f in write_map(ds, tmp_path / "st")}
    assert {"tile_map.nc", "tile_map.png", "tile_map_montage.png", "tile_map.html"} <= names
    assert ds.neighbor.shape == (1, 20, 5) and ds.cluster.shape == (1, 20)


def test_too_few_images(tmp_path):
    import tifffile

    (tmp_path / "one").mkdir()
    tifffile.imwrite(tmp_path / "one" / "x.tif", np.random.default_rng(0).random((32, 32)))
    with pytest.raises(ValueError, match="too few to embed"):
        _mapped(tmp_path / "one", tmp_path / "st", level="image")


def test_neighbours_outliers_and_clusters_in_the_map(tmp_path):
    archive = tmp_path / "demo"
    write_demo_archive(archive, n=12, size=32, seed=5)
    ds = _mapped(archive, tmp_path / "st", level="image")
    n = ds.sizes["image"]
    assert ds.neighbor.dims == ("descriptor", "image", "rank") and ds.sizes["rank"] == 5
    assert ds.outlier_score.dims == ds.cluster.dims == ("descriptor", "image")
    for name in ("neighbor", "neighbor_distance", "outlier_score", "cluster"):
        assert {"long_name", "description"} <= set(ds[name].attrs)
    # the oracle: a stable argsort of the whole matrix, self excluded
    D = read_rows(open_store(tmp_path / "st"), "distances/ps").astype(np.float64)
    np.fill_diagonal(D, np.inf)
    want = np.argsort(D, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ds.neighbor.sel(descriptor="ps").values, want)
    np.testing.assert_array_equal(
        ds.neighbor_distance.sel(descriptor="ps").values, np.take_along_axis(D, want, axis=1)
    )
    np.testing.assert_array_equal(
        ds.outlier_score.values, ds.neighbor_distance.isel(rank=-1).values
    )
    stress = dict(zip(ds.n_components.values, ds.stress.sel(descriptor="ps").values, strict=True))
    dim = int(ds.cluster_n_components.sel(descriptor="ps"))
    assert dim == cluster_dimension(stress)
    labels = ds.cluster.sel(descriptor="ps").values
    assert labels.dtype == np.int64 and labels.shape == (n,) and labels.min() >= -1
    # they survive netCDF
    write_map(ds, tmp_path / "st")
    back = read_dataset(tmp_path / "st" / "results" / "map.nc").load()
    np.testing.assert_array_equal(back.neighbor.values, ds.neighbor.values)
    np.testing.assert_array_equal(back.cluster.values, ds.cluster.values)


def test_cluster_dimension():
    assert cluster_dimension({1: 0.3, 2: 0.08, 3: 0.04}) == 2
    assert cluster_dimension({1: 0.3, 2: 0.2}) == 2  # none is good enough: the largest
    assert cluster_dimension({1: float("nan"), 2: 0.05}) == 2


def test_old_dims_keyword_still_works_with_a_warning(tmp_path):
    archive = tmp_path / "demo"
    write_demo_archive(archive, n=10, size=32, seed=3)
    ds = _mapped(archive, tmp_path / "st", level="image")
    with pytest.warns(FutureWarning, match="'dims' is renamed 'n_components'"):
        old = map_store(tmp_path / "st", descriptors=["ps"], dims=[1, 2, 3], archive=archive)
    # the old keyword reaches the same parameter (the second run starts from the stored map)
    assert list(old.n_components.values) == list(ds.n_components.values) == [1, 2, 3]
    assert old.embedding.shape == ds.embedding.shape
    with pytest.warns(FutureWarning, match=r"embed\(\): 'dims' is renamed"):
        res = pipeline.embed(tmp_path / "st", descriptor="ps", dims=[2], save=False)
    assert list(res["embeddings"]) == [2]
