"""map.png and the stress plot: labelled axes, categorical legends, relative outlier scores,
one D* — checked on the matplotlib objects, not on pixels."""

from __future__ import annotations

import numpy as np
import pytest

from microscale import pipeline, plots
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.mapping import map_store


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A 12-image demo archive mapped by the power spectrum, without its ground truth."""
    root = tmp_path_factory.mktemp("plots-map")
    archive, st = root / "demo", root / "st"
    write_demo_archive(archive, n=12, size=32, seed=3)
    ingest_archive(archive, st, tile_size=32, normalize="minmax")
    pipeline.run_features(st, descriptor="ps")
    pipeline.image_features(st, descriptor="ps")
    pipeline.run_distances(st, descriptor="ps", block_size=5)
    return map_store(st, descriptors=["ps"], n_components=[1, 2, 3, 4], n_neighbors=3)


@pytest.fixture
def figures(monkeypatch):
    kept = []
    save = plots._save

    def spy(fig, path):
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return kept


def test_map_panels_are_labelled_with_legends(mapped, figures, tmp_path):
    plots.plot_map(mapped, tmp_path / "map.png")
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3  # folder, outlier score, cluster
    folder, outlier, cluster = panels
    for ax in panels:
        assert ax.get_xlabel() == "MDS component 1" and ax.get_ylabel() == "MDS component 2"
        assert len(ax.get_xticks()) > 1 and len(ax.get_yticks()) > 1
    # folders: a legend that names them (categories, not a colour bar)
    names = {str(s).split("/")[0] for s in mapped.image_path.values}
    legend = folder.get_legend()
    assert legend is not None and legend.get_title().get_text() == "folder"
    assert {t.get_text() for t in legend.get_texts()} == names
    # clusters: a legend, noise in grey, no colour reused
    labels = mapped.cluster.sel(descriptor="ps").values
    legend = cluster.get_legend()
    assert legend.get_title().get_text() == f"{len(set(labels[labels >= 0]))} clusters"
    texts = [t.get_text() for t in legend.get_texts()]
    colours = [tuple(np.round(c.get_facecolor()[0], 3)) for c in cluster.collections]
    assert len(set(colours)) == len(colours)
    if (labels < 0).any():
        noise = cluster.collections[texts.index("noise")]
        assert np.allclose(noise.get_facecolor()[0][:3], 200 / 255)
    # outlier scores relative to the median: the colour bar says so, values around 1
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "/ median" in bar.get_ylabel()
    values = np.asarray(outlier.collections[0].get_array().filled(np.nan))
    assert np.nanmedian(values) == pytest.approx(1.0)
    # one D*: the title names the dimension the interactive page shows (3 of 1..4)
    assert "D*=3" in fig.get_suptitle() and plots.map_dimension([1, 2, 3, 4]) == 3


def test_many_folders_top_ones_named_the_rest_grey(mapped, figures, tmp_path):
    n = mapped.sizes["image"]
    paths = np.array([f"f{i:02d}/x.tif" for i in range(n)])
    ds = mapped.assign_coords(image_path=("image", paths))
    plots.plot_map(ds, tmp_path / "map.png")
    legend = figures[0].axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == plots.TOP_CATEGORIES + 1
    assert texts[-1] == f"{n - plots.TOP_CATEGORIES} others"


def test_stress_plot_ticks_every_dimension(mapped, figures, tmp_path):
    plots.plot_stress_vs_dimension(mapped, tmp_path / "stress.png")
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    figures[0].canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
