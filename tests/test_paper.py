"""`microscale paper` end to end on a tiny configuration, through the CLI."""

import numpy as np
import pytest

from microscale import evaluate, results
from microscale.cli import main

pytestmark = pytest.mark.weights

TINY = [
    "--size",
    "32",
    "--grid-size",
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
    code = main(
        [
            "paper",
            "--size",
            "8",
            "--grid-size",
            "8",
            "--out",
            "/tmp/unused",
            "--synthesis-steps",
            "0",
        ]
    )
    assert code == 2
    assert "'size' parameter must be an int >= 16" in capsys.readouterr().err


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory, vgg_weights):
    """run_paper with the backbone comparison; no ImageNet VGG-19 in an empty hub cache."""
    from pathlib import Path

    import torch

    from microscale.paper import PaperConfig, run_paper

    out = tmp_path_factory.mktemp("backbones")
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(out / "empty-hub"))
    try:
        config = PaperConfig(
            out=Path(out),
            size=32,
            grid_size=32,
            angle_n=(12,),
            amplitudes=(0.0, 3.0),
            trials=2,
            grid_n=3,
            synthesis_steps=0,
            device="cpu",
            backbones=("vgg19-normalized", "random:1", "vgg19-imagenet"),
        )
        res = run_paper(config, progress=False)
    finally:
        torch.hub.set_dir(saved)
    return config, res


def test_backbone_comparison_is_opt_in():
    from microscale.paper import PaperConfig

    assert PaperConfig().backbones == () and PaperConfig.full().backbones == ()


def test_backbone_comparison_side_by_side(backbone_run):
    config, res = backbone_run
    ang, grid = res.backbone_angle, res.backbone_grid
    assert list(ang.descriptor.values) == ["vgg19-normalized", "random:1", "ps"]
    assert list(grid.descriptor.values) == ["vgg19-normalized", "random:1", "ps"]
    assert ang.rmse.shape == (3, 2, 1, 2) and np.isfinite(ang.rmse).all()
    # the default backbone and the spectrum are the main run's numbers, not a second run
    np.testing.assert_array_equal(
        ang.rmse.sel(descriptor="vgg19-normalized").values, res.angle.rmse.sel(descriptor="cnn")
    )
    np.testing.assert_array_equal(
        grid.r2.sel(descriptor="ps").values, res.grid.r2.sel(descriptor="ps").values
    )
    # the random network's metrics recompute from its stored embeddings
    for a in ang.A.values:
        emb = ang.embedding_2d.sel(descriptor="random:1", A=a).values
        assert float(
            ang.rmse.sel(descriptor="random:1", A=a).isel(n_images=0, trial=0)
        ) == pytest.approx(evaluate.angle_rmse(emb, ang.theta.values))
    x = grid.embedding.sel(descriptor="random:1", n_components=3).values[:, :3]
    assert float(grid.r2.sel(descriptor="random:1", n_components=3, parameter="A")) == (
        pytest.approx(evaluate.r_squared(x, grid.A.values))
    )
    assert set(res.backbones_unavailable) == {"vgg19-imagenet"}
    report = res.report.read_text()
    assert "### Backbones: can a random network embed microstructures" in report
    assert "| backbone | RMSE A=0 | RMSE A=3 | mean stress D*=2 | R² k (D*=3) | R² A (D*=3) |" in (
        report
    )
    assert "| random:1 |" in report
    assert "`vgg19-imagenet`: torchvision's ImageNet VGG-19 is not available on this machine" in (
        report
    )
    assert "weights='/path/to/vgg19-dcbb9e9d.pth'" in report
    for name in ("backbones_angle.nc", "backbones_grid.zarr"):
        assert (config.out / name).exists()
    stored = results.read_dataset(config.out / "backbones_grid.nc").load()
    assert list(stored.descriptor.values) == ["vgg19-normalized", "random:1", "ps"]


def test_cli_backbones_flag_reaches_the_config(monkeypatch):
    from microscale import paper
    from microscale.cli import main

    seen = {}

    def capture(config):
        seen["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(paper, "run_paper", capture)
    code = main(["paper", "--out", "/tmp/unused", "--backbones", "vgg19-normalized, random:2"])
    assert code == 2
    assert tuple(seen["config"].backbones) == ("vgg19-normalized", "random:2")


def test_tasks_subset_runs_only_those(tmp_path, vgg_weights):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["paper", "--out", str(tmp_path), *TINY, "--tasks", "grid"])
    assert code == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"grid_task.nc", "grid_embedding.png", "report.md"} <= names
    assert not names & {"angle_task.nc", "angle_stress.nc", "synthesis.nc", "synthesis.png"}
    report = (tmp_path / "report.md").read_text()
    assert "### 3-D task (Table I)" in report and "### Angle task" not in report
    assert "| Table I | at D* = 4 a linear map recovers k and A" in report
    assert "Tasks: grid." in report


def test_stress_task_alone_runs_one_angle_trial(tmp_path, vgg_weights):
    from microscale.paper import PaperConfig, run_paper

    config = PaperConfig(
        out=tmp_path,
        tasks=("stress",),
        size=32,
        angle_n=(12, 16),
        amplitudes=(0.0, 3.0),
        trials=5,
        device="cpu",
    )
    res = run_paper(config, progress=False)
    assert res.angle is None and res.grid is None and res.synthesis is None
    assert res.angle_stress is not None
    assert list(res.angle_stress.A.values) == [0.0, 3.0]
    assert list(res.timings) == ["angle task (1 trial, for Fig. 8)"]
    assert (tmp_path / "angle_stress_vs_dimension.png").exists()


def test_config_validates_tasks_and_noise():
    from microscale.paper import PaperConfig

    with pytest.raises(ValueError, match="subset of angle, stress, grid, synthesis"):
        PaperConfig(tasks=("angles",))
    with pytest.raises(ValueError, match="'noise' parameter must be"):
        PaperConfig(noise="loud")
    assert PaperConfig(noise="by-eye").noise == "by-eye"


def test_cli_tasks_and_noise_reach_the_config(monkeypatch):
    from microscale import paper

    seen = {}

    def capture(config):
        seen["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(paper, "run_paper", capture)
    main(["paper", "--out", "/tmp/unused", "--tasks", "angle,grid", "--noise", "by-eye"])
    assert seen["config"].tasks == ("angle", "grid")
    assert seen["config"].noise == "by-eye"
    assert seen["config"].grid_size == 256 and seen["config"].trials == 10
