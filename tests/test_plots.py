"""Tests for microscale.plots: every figure is written, is not blank, and shows what it says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from microscale import plots
from microscale.results import build_angle_dataset, build_stress_curves

A = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


@pytest.fixture
def angle_ds():
    rng = np.random.default_rng(0)
    return build_angle_dataset(
        rmse=rng.uniform(0.01, 0.5, size=(2, len(A), 1, 3)),
        stress=rng.uniform(0.0, 0.4, size=(2, len(A), 1, 3)),
        embedding_2d=rng.normal(size=(2, len(A), 8, 2)),
        theta=np.arange(8) * np.pi / 8,
        descriptors=("cnn", "ps"),
        amplitudes=A,
        n_images=(8,),
    )


@pytest.fixture
def captured(monkeypatch):
    """The figures passed to plots._save (they are still saved)."""
    figures = []
    save = plots._save

    def spy(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return figures


def _assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 5  # not a blank canvas


def test_angle_curves_mark_the_papers_windows(tmp_path, angle_ds, captured):
    path = plots.plot_angle_curves(angle_ds, tmp_path / "a.png")
    _assert_png(path)
    ax_rmse = captured[0].axes[0]
    assert ax_rmse.get_yscale() == "log"
    labels = ax_rmse.get_legend_handles_labels()[1]
    assert "paper: PS window" in labels and "paper: CNN edge" in labels
    hlines = {round(line.get_ydata()[0], 3) for line in ax_rmse.lines if len(line.get_ydata()) == 2}
    assert 0.1 in hlines  # the 'good' threshold
    # one band per method (trials > 1): mean +- sd
    assert len(ax_rmse.collections) >= 2


def test_every_paper_figure_is_written(tmp_path, angle_ds):
    _assert_png(plots.plot_angle_embeddings(angle_ds, tmp_path / "e.png"))
    curves = build_stress_curves(
        stress=np.array([[[0.3, 0.1, 0.05]], [[0.4, 0.35, 0.3]]]),
        descriptors=("cnn", "ps"),
        amplitudes=(2.0,),
        n_components=(1, 2, 3),
    ).sel(A=2.0)
    _assert_png(plots.plot_stress_vs_dimension(curves, tmp_path / "nested" / "s.png"))
