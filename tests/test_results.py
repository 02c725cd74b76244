import json

import numpy as np
import pytest
import xarray as xr

from microscale.results import build_dataset, provenance, read_dataset, write_dataset


def _dataset():
    rng = np.random.default_rng(0)
    return build_dataset(
        embeddings={
            "cnn": {1: rng.random((5, 1)), 3: rng.random((5, 3))},
            "ps": {3: rng.random((5, 3))},
        },
        stress={"cnn": {1: 0.2, 3: 0.05}, "ps": {3: 0.1}},
        params={"theta": np.linspace(0, 3, 5), "k": np.arange(5.0)},
        images=rng.random((5, 8, 8)).astype(np.float32),
        image_ids=[f"img{i}.tif" for i in range(5)],
        metrics={
            "r2": (
                ("descriptor", "n_components", "parameter"),
                rng.random((2, 2, 1)),
                {"long_name": "R2"},
            )
        },
        coords={"parameter": ["k"]},
        attrs=provenance(
            parameters={"size": np.int64(8), "layers": ["conv1_1"]}, weights_sha256="ab"
        ),
    )


def test_schema_and_padding():
    ds = _dataset()
    assert ds.embedding.dims == ("descriptor", "n_components", "image", "component")
    assert ds.sizes == {
        "descriptor": 2,
        "n_components": 2,
        "image": 5,
        "component": 3,
        "y": 8,
        "x": 8,
        "parameter": 1,
    }
    one = ds.embedding.sel(descriptor="cnn", n_components=1)
    assert np.isfinite(one[:, 0]).all() and np.isnan(one[:, 1:]).all()
    assert np.isnan(ds.embedding.sel(descriptor="ps", n_components=1)).all()  # not computed
    assert float(ds.stress.sel(descriptor="ps", n_components=3)) == 0.1
    assert list(ds.image.values) == [f"img{i}.tif" for i in range(5)]


def test_provenance_attributes():
    attrs = _dataset().attrs
    versions = json.loads(attrs["versions"])
    assert {"numpy", "torch", "xarray", "microscale"} <= set(versions)
    assert json.loads(attrs["parameters"]) == {"size": 8, "layers": ["conv1_1"]}
    assert attrs["weights_sha256"] == "ab"


def test_round_trip_zarr_and_netcdf(tmp_path):
    ds = _dataset()
    zpath, npath = write_dataset(ds, tmp_path / "res")
    assert zpath.name == "res.zarr" and npath.name == "res.nc"
    from_zarr, from_nc = read_dataset(zpath).load(), read_dataset(npath).load()
    xr.testing.assert_equal(from_zarr, ds)
    xr.testing.assert_equal(from_nc, ds)
    assert from_nc.attrs["weights_sha256"] == "ab"


def test_validation():
    with pytest.raises(ValueError, match="disagree on the number of images"):
        build_dataset(embeddings={"a": {1: np.zeros((3, 1)), 2: np.zeros((4, 2))}})
    with pytest.raises(ValueError, match="expected \\(3, 2\\)"):
        build_dataset(embeddings={"a": {2: np.zeros((3, 3))}})
    with pytest.raises(ValueError, match="Parameter 'k' has shape"):
        build_dataset(embeddings={"a": {1: np.zeros((3, 1))}}, params={"k": np.zeros(4)})
    with pytest.raises(ValueError, match="empty"):
        build_dataset(embeddings={})
