"""map.nc as a scientist reads it: CF attributes everywhere, and the README's recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import xarray as xr

from microscale import pipeline
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.mapping import map_store, write_map

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def map_nc(tmp_path_factory):
    root = tmp_path_factory.mktemp("map-nc")
    archive, st = root / "demo", root / "st"
    write_demo_archive(archive, n=12, size=32, seed=3)
    ingest_archive(archive, st, tile_size=32, normalize="minmax")
    pipeline.run_features(st, descriptor="ps")
    pipeline.image_features(st, descriptor="ps")
    pipeline.run_distances(st, descriptor="ps", block_size=5)
    ds = map_store(st, descriptors=["ps"], n_components=[1, 2], archive=archive, n_neighbors=3)
    write_map(ds, st)
    return st / "results" / "map.nc"


def test_every_coordinate_and_variable_has_units_and_long_name(map_nc):
    with xr.open_dataset(map_nc) as ds:
        for name in [*ds.coords, *ds.data_vars]:
            assert {"units", "long_name"} <= set(ds[name].attrs), name
        assert ds.pixel_size_nm.attrs["units"] == "nm"
        assert ds.theta.attrs["units"] == "rad"
        assert "texture distance" in ds.embedding.attrs["long_name"]
        assert ds.attrs["source"].startswith("microscale ")
        assert re.match(r"\d{4}-\d\d-\d\dT.*: microscale map of ", ds.attrs["history"])


def test_readme_recipe_nearest_neighbours_by_path(map_nc, monkeypatch):
    text = README.read_text()
    (recipe,) = re.findall(r"```python\n(# nearest neighbours of an image.*?)```", text, re.S)
    with xr.open_dataset(map_nc) as ds:
        path = str(ds.image_path.values[4])
        neighbours = ds.neighbor.sel(descriptor="ps").values[4]
        expected = [str(p) for p in ds.image_path.values[neighbours]]
    recipe = recipe.replace('"microscale-store/results/map.nc"', repr(str(map_nc)))
    recipe = recipe.replace('"a/sample.tif"', repr(path)).replace('"cnn"', '"ps"')
    scope: dict = {}
    exec(compile(recipe, "README recipe", "exec"), scope)
    assert list(scope["paths"]) == expected
    assert len(scope["distances"]) == len(expected)
