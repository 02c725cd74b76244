"""`microscale paper` end to end on a tiny configuration, through the CLI."""

import numpy as np
import pytest

from microscale import evaluate, results
from microscale.cli import main

pytestmark = pytest.mark.weights

TINY = [
    "--size",
    "32",
    "--angle-n",
    "12",
    "--amplitudes",
    "0,3",
    "--trials",
    "2",
    "--grid-n",
    "3",
    "--synthesis-steps",
    "3",
    "--synthesis-size",
    "32",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, vgg_weights):
    out = tmp_path_factory.mktemp("paper")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["paper", "--out", str(out), *TINY])
    return code, out, buf.getvalue()


def test_cli_prints_summary_and_outputs(paper_run):
    code, out, text = paper_run
    assert code == 0
    for heading in ("Angle task", "Stress vs dimension", "Table I", "Texture synthesis"):
        assert heading in text
    for name in (
        "report.md",
        "angle_task.zarr",
        "angle_task.nc",
        "grid_task.nc",
        "angle_rmse_stress.png",
        "grid_embedding.png",
        "synthesis.png",
    ):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "| A | N | RMSE CNN | RMSE PS" in report
    assert "![angle_rmse_stress](angle_rmse_stress.png)" in report


def test_angle_metrics_recompute_from_stored_embeddings(paper_run):
    _, out, _ = paper_run
    ds = results.read_dataset(out / "angle_task.nc").load()
    assert ds.rmse.shape == (2, 2, 1, 2)  # descriptor, A, N, trial
    assert np.isfinite(ds.rmse).all() and np.isfinite(ds.stress).all()
    for d in ds.descriptor.values:
        for a in ds.A.values:
            emb = ds.embedding_2d.sel(descriptor=d, A=a).values
            expect = evaluate.angle_rmse(emb, ds.theta.values)
            assert float(ds.rmse.sel(descriptor=d, A=a).isel(n_images=0, trial=0)) == pytest.approx(
                expect
            )
    assert len(ds.attrs["weights_sha256"]) == 64


def test_grid_metrics_recompute_from_stored_embeddings(paper_run):
    _, out, _ = paper_run
    ds = results.read_dataset(out / "grid_task.zarr").load()
    assert ds.sizes["image"] == 27
    assert list(ds.n_components.values) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # all < N = 27
    for d in ("cnn", "ps"):
        x = ds.embedding.sel(descriptor=d, n_components=3).values[:, :3]
        assert float(ds.r2.sel(descriptor=d, n_components=3, parameter="k")) == pytest.approx(
            evaluate.r_squared(x, ds.k.values)
        )
        st = ds.stress.sel(descriptor=d).values
        assert np.all(np.diff(st) <= 1e-9)  # more dimensions never fit worse
    assert ds.image_data.shape == (27, 32, 32)


def test_bad_option_is_a_clear_error(capsys):
    code = main(["paper", "--size", "8", "--out", "/tmp/unused", "--synthesis-steps", "0"])
    assert code == 2
    assert "'size' parameter must be an int >= 16" in capsys.readouterr().err
