import numpy as np
import pytest

from microscale import pipeline, synth
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.mapping import map_store, write_map
from microscale.results import read_dataset
from microscale.store import open_store


def _mapped(archive, store, *, level):
    ingest_archive(archive, store, tile_size=32, normalize="minmax")
    pipeline.run_features(store, descriptor="ps")
    if level == "image":
        pipeline.image_features(store, descriptor="ps")
    pipeline.run_distances(store, descriptor="ps", block_size=8, level=level)
    return map_store(store, descriptors=["ps"], dims=[1, 2, 3], archive=archive, level=level)


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
    assert {"map.zarr", "map.nc", "map.png", "map_stress_vs_dimension.png"} <= names
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
    assert {"tile_map.nc", "tile_map.png", "tile_map_montage.png"} <= names


def test_too_few_images(tmp_path):
    import tifffile

    (tmp_path / "one").mkdir()
    tifffile.imwrite(tmp_path / "one" / "x.tif", np.random.default_rng(0).random((32, 32)))
    with pytest.raises(ValueError, match="too few to embed"):
        _mapped(tmp_path / "one", tmp_path / "st", level="image")
