"""The `pipeline` flow end to end under Prefect's test harness, on a local Dask cluster."""

import json

import numpy as np
import pytest
import tifffile
from prefect.testing.utilities import prefect_test_harness

from flows.params import PipelineParams
from flows.pipeline import pipeline
from microscale import io
from microscale.demo import read_parameters, write_demo_archive
from microscale.distance import pairwise_distances
from microscale.intensity import normalize_intensity
from microscale.manifold import mds, stress
from microscale.results import read_dataset
from microscale.spectrum import power_spectra
from microscale.texture import texture_vectors

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, harness, vgg_weights):
    root = tmp_path_factory.mktemp("flow")
    archive = root / "archive"
    write_demo_archive(archive, n=10, size=64, seed=5)
    params = PipelineParams(
        archive=archive, store=root / "store", tile_size=64, n_workers=1, block_size=4,
        n_components=[1, 2, 3], device="cpu", calibrate=False,
    )  # fmt: skip
    return params, pipeline(params)


def _library_path(params, ds):
    """The same images through the in-memory library: read, normalise, describe, embed."""
    images = []
    for path in ds.image_path.values:
        rel, _, page = str(path).partition("#")
        micro = io.read_micrograph(params.archive / rel, page=int(page or 0))
        images.append(normalize_intensity(micro.data, method=params.normalize)[0])
    images = np.stack(images)
    return {
        "cnn": pairwise_distances(texture_vectors(images, normalize=None, device="cpu")),
        "ps": pairwise_distances(power_spectra(images)),
    }


def test_pipeline_result_equals_the_library_path(run):
    params, result = run
    ds = read_dataset(params.store / "results" / "map.nc").load()
    assert result["ingest"]["failed"] >= 1  # the demo's broken files are recorded
    assert ds.sizes["image"] == result["ingest"]["n_images"] == len(read_parameters(params.archive))
    statuses = set(ds.file_status.values)
    assert statuses == {"processed", "skipped", "failed"}
    D = _library_path(params, ds)
    for desc in ("cnn", "ps"):
        for k in (1, 2, 3):
            x = ds.embedding.sel(descriptor=desc, n_components=k).values[:, :k]
            assert np.isfinite(x).all()
            # the map's stress, recomputed against the library's distances, is what it says
            assert stress(D[desc], x) == pytest.approx(
                float(ds.stress.sel(descriptor=desc, n_components=k)), rel=1e-5
            )
            # and no worse than the library's own MDS on those distances
            assert stress(D[desc], x) <= stress(D[desc], mds(D[desc], k, random_state=0)) + 1e-6
    assert "r2" in ds and ds.attrs["weights_sha256"]


def test_rerun_computes_nothing_and_growth_computes_only_new_blocks(run):
    params, first = run
    again = pipeline(params)
    assert again["ingest"]["new_images"] == 0
    assert all(v["batches"] == 0 for v in again["features"].values())
    assert all(v["blocks"] == 0 for v in again["distances"].values())
    rng = np.random.default_rng(9)
    for i in range(2):
        img = (rng.random((64, 64)) * 60000).astype(np.uint16)
        tifffile.imwrite(params.archive / f"new_{i}.tif", img)
    grown = pipeline(params)
    assert grown["ingest"]["new_images"] == 2
    n_blocks_total = sum(1 for i in range(3) for j in range(i, 3))  # 12 images, blocks of 4
    for desc, counts in grown["distances"].items():
        # 10 -> 12 images: only blocks touching the last row block (rows 8-11) are redone
        assert counts["blocks"] == 3, desc
        assert counts["blocks"] + counts["blocks_done_before"] == n_blocks_total
    ds = read_dataset(params.store / "results" / "map.zarr").load()
    assert ds.sizes["image"] == 12


def test_cli_run_writes_the_demo_archive_and_prints_a_summary(harness, tmp_path, capsys):
    from microscale.cli import main

    store = tmp_path / "store"
    code = main(["run", "--store", str(store), "--demo-images", "9", "--tile-size", "128",
                 "--dims", "1,2,3", "--workers", "1", "--device", "cpu",
                 "--sketch-dim", "64", "--landmarks", "6",
                 "--texture-precision", "bfloat16"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    # the scale options reached the workers and the embedding, and the map says so
    ds = read_dataset(store / "results" / "map.zarr")
    assert json.loads(ds.attrs["sketch"])["n_components"] == 64
    assert ds.attrs["texture_precision"] == "bfloat16"
    assert json.loads(ds.attrs["mds_method"]) == {"cnn": "landmark", "ps": "landmark"}
    assert json.loads(ds.attrs["mds_landmarks"]) == {"cnn": 6, "ps": 6}
    assert (store / "results" / "map.html").is_file()
    assert (store / "demo-archive" / "parameters.csv").is_file()
    assert "processed" in out and "failed" in out and "Stress-1 by dimension" in out
    assert "R^2 of linear maps to the ground truth at D*=3" in out
    assert str(store / "results" / "map.nc") in out


def test_cli_run_passes_scale_options_to_the_pipeline(monkeypatch, tmp_path):
    import flows.pipeline as fp
    from microscale.cli import main

    seen = {}

    def fake_pipeline(params):
        seen["params"] = params
        raise ValueError("stop here")

    monkeypatch.setattr(fp, "pipeline", fake_pipeline)
    archive = tmp_path / "archive"
    archive.mkdir()
    tifffile.imwrite(archive / "a.tif", np.zeros((8, 8), np.uint8))  # passes the pre-check
    code = main(["run", str(archive), "--store", str(tmp_path / "st"), "--sketch-dim", "512",
                 "--sketch-seed", "3", "--landmarks", "800", "--max-dense", "5000",
                 "--block-size", "384", "--texture-precision", "bfloat16"])  # fmt: skip
    assert code == 2
    p = seen["params"]
    assert (p.sketch_dim, p.sketch_seed, p.landmarks, p.max_dense) == (512, 3, 800, 5000)
    assert (p.block_size, p.texture_precision) == (384, "bfloat16")
    main(["run", str(archive), "--store", str(tmp_path / "st")])
    assert (seen["params"].block_size, seen["params"].texture_precision) == (None, "float32")
