"""Figures in the spirit of the paper's, drawn from the result Datasets (matplotlib, Agg).

Every function takes an :class:`xarray.Dataset` written by :mod:`microscale.paper` and a
path, and writes one PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "plot_angle_curves",
    "plot_angle_embeddings",
    "map_dimension",
    "plot_grid_embedding",
    "plot_map",
    "plot_stress_vs_dimension",
    "plot_synthesis",
]

_LABELS = {"cnn": "CNN (VGG-19 Gram)", "ps": "power spectrum"}
_COLORS = {"cnn": "tab:blue", "ps": "tab:orange"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_angle_curves(ds: xr.Dataset, path: str | Path) -> Path:
    """RMSE and stress (D* = 2) against noise amplitude A, CNN and PS side by side (Figs. 6-7).

    Mean over trials, with the standard deviation as a band; one line style per N.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for ax, var, label in zip(
        axes, ("rmse", "stress"), ("angle RMSE (rad)", "stress-1 at D*=2"), strict=True
    ):
        for method in ds.descriptor.values:
            for s, n in enumerate(ds.n_images.values):
                da = ds[var].sel(descriptor=method, n_images=n)
                mean, sd = da.mean("trial"), da.std("trial")
                ax.plot(
                    ds.A,
                    mean,
                    styles[s % 4],
                    color=_COLORS.get(str(method)),
                    marker="o",
                    label=f"{_LABELS.get(str(method), method)}, N={int(n)}",
                )
                if ds.sizes["trial"] > 1:
                    ax.fill_between(
                        ds.A, mean - sd, mean + sd, alpha=0.2, color=_COLORS.get(str(method))
                    )
        ax.set_xlabel("noise amplitude A")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(np.pi / np.sqrt(12), color="grey", lw=0.8, ls=":")
    axes[0].text(ds.A.values[0], np.pi / np.sqrt(12), " random guess", va="bottom", fontsize=8)
    # the paper's Fig. 6: PS good only for 2 <~ A <~ 3.5, CNN good up to A ~ 4.5
    axes[0].set_yscale("log")
    axes[0].axhline(0.1, color="black", lw=0.8, ls="--")
    axes[0].text(ds.A.values[0], 0.1, " good (0.1 rad)", va="bottom", fontsize=8)
    axes[0].axvspan(2.0, 3.5, color=_COLORS.get("ps"), alpha=0.08, label="paper: PS window")
    axes[0].axvline(4.5, color=_COLORS.get("cnn"), lw=0.8, ls="-.", label="paper: CNN edge")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Angle task ({ds.sizes['trial']} trial(s) per point)")
    return _save(fig, path)


def plot_angle_embeddings(ds: xr.Dataset, path: str | Path) -> Path:
    """2-D embeddings of the angle task coloured by theta, one column per A (Fig. 5)."""
    plt = _pyplot()
    methods, amps = ds.descriptor.values, ds.A.values
    fig, axes = plt.subplots(
        len(methods), len(amps), figsize=(2.3 * len(amps), 2.4 * len(methods)), squeeze=False
    )
    for i, method in enumerate(methods):
        for j, a in enumerate(amps):
            ax = axes[i, j]
            xy = ds.embedding_2d.sel(descriptor=method, A=a).values
            ax.scatter(xy[:, 0], xy[:, 1], c=ds.theta.values, cmap="twilight", s=12)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xticks([])
            ax.set_yticks([])
            rmse = float(ds.rmse.sel(descriptor=method, A=a).isel(n_images=0, trial=0))
            ax.set_title(f"A={a:g}  RMSE={rmse:.2f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(_LABELS.get(str(method), str(method)), fontsize=9)
    fig.suptitle("Angle task: 2-D MDS embeddings coloured by orientation theta")
    return _save(fig, path)


def plot_stress_vs_dimension(ds: xr.Dataset, path: str | Path) -> Path:
    """Stress-1 against embedding dimension D*, CNN and PS (Fig. 8)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in ds.descriptor.values:
        st = ds.stress.sel(descriptor=method)
        ax.plot(
            ds.n_components,
            st,
            marker="o",
            color=_COLORS.get(str(method)),
            label=_LABELS.get(str(method), str(method)),
        )
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator([int(k) for k in ds.n_components.values]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("embedding dimension D*")
    ax.set_ylabel("Kruskal stress-1")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(ds.attrs.get("title", "Stress vs dimension"), fontsize=9)
    return _save(fig, path)


def plot_grid_embedding(ds: xr.Dataset, path: str | Path, *, n_components: int = 3) -> Path:
    """Embedding of the 3-D task, first two coordinates coloured by theta, k and A."""
    plt = _pyplot()
    methods = ds.descriptor.values
    params = [p for p in ("theta", "k", "A") if p in ds.coords]
    fig, axes = plt.subplots(
        len(methods), len(params), figsize=(3.4 * len(params), 3.2 * len(methods)), squeeze=False
    )
    d = n_components if n_components in ds.n_components else int(ds.n_components[0])
    for i, method in enumerate(methods):
        xy = ds.embedding.sel(descriptor=method, n_components=d).values
        for j, p in enumerate(params):
            ax = axes[i, j]
            sc = ax.scatter(
                xy[:, 0],
                xy[:, 1],
                c=ds[p].values,
                s=8,
                cmap="twilight" if p == "theta" else "viridis",
            )
            fig.colorbar(sc, ax=ax, shrink=0.8, label=p)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(_LABELS.get(str(method), str(method)))
    fig.suptitle(f"3-D task: MDS at D*={d}, coordinates 1-2, coloured by each parameter")
    return _save(fig, path)


def plot_synthesis(ds: xr.Dataset, path: str | Path) -> Path:
    """Original, starting noise and synthesised image, with the loss curve (Fig. 1)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    axes[0].imshow(ds.original.values, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("original")
    axes[1].imshow(ds.synthesized.values, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("synthesised from its texture vector")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2].semilogy(ds.step, ds.loss, marker=".")
    axes[2].set_xlabel("L-BFGS step")
    axes[2].set_ylabel("texture loss L(x, x_orig)")
    axes[2].grid(alpha=0.3, which="both")
    return _save(fig, path)


#: Folders (or clusters) that get a colour of their own in map.png; the rest are grey.
TOP_CATEGORIES = 9
_NOISE_GREY = "#c8c8c8"
_OTHER_GREY = "#7f7f7f"


def map_dimension(n_components: Sequence[int]) -> int:
    """The embedding dimension D* that the map's figures and page show: the largest <= 3.

    Its first two coordinates are drawn; the interactive page also offers the third.

    Examples
    --------
    >>> map_dimension([1, 2, 3, 4]), map_dimension([2]), map_dimension([5, 8])
    (3, 2, 5)
    """
    ks = sorted(int(k) for k in n_components)
    return max([k for k in ks if k <= 3] or [ks[0]])


def _categorical(ax, xy: np.ndarray, labels: np.ndarray, *, noise: str | None, title: str) -> None:
    """Scatter by category: the TOP_CATEGORIES largest in a qualitative palette, the other
    categories dark grey, ``noise`` (a label, e.g. "-1") light grey; a legend names them."""
    import matplotlib

    labels = np.asarray([str(v) for v in labels], dtype=object)
    names, counts = np.unique(labels[labels != noise], return_counts=True)
    order = names[np.lexsort((names, -counts))]  # largest first, then by name
    top, rest = list(order[:TOP_CATEGORIES]), list(order[TOP_CATEGORIES:])
    palette = matplotlib.colormaps["tab10"].colors
    for i, name in enumerate(top):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=palette[i % len(palette)], label=name)
    if rest:
        sel = np.isin(labels, rest)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=_OTHER_GREY, label=f"{len(rest)} others")
    if noise is not None and (labels == noise).any():
        sel = labels == noise
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=_NOISE_GREY, label="noise")
    ax.legend(title=title, fontsize=6, title_fontsize=7, loc="best", markerscale=0.8)


def plot_map(ds: xr.Dataset, path: str | Path) -> Path:
    """The archive map: 2-D embedding per descriptor, coloured by each ground-truth
    parameter when there is one, else by top-level folder (a legend of the largest
    :data:`TOP_CATEGORIES`, the others grey), then by the descriptor's outlier score
    (relative to the median) and cluster (a legend; noise grey) when the Dataset has them.
    The embedding shown is that of :func:`map_dimension`, as on the interactive page."""
    plt = _pyplot()
    descriptors = list(ds.descriptor.values)
    d = map_dimension(ds.n_components.values)
    colourings: list[tuple[str, np.ndarray | str, str]] = []
    for p in ("theta", "k", "A"):
        if p in ds.coords and np.isfinite(ds[p].values).any():
            units = ds[p].attrs.get("units")
            label = f"{p} ({units})" if units and units != "1" else p
            colourings.append((label, ds[p].values, "twilight" if p == "theta" else "viridis"))
    if not colourings:
        folders = np.array([str(s).split("/")[0] for s in ds.image_path.values])
        colourings.append(("folder", folders, "categorical"))
    if "outlier_score" in ds:  # per descriptor: the name of the variable
        colourings.append(("outlier score", "outlier_score", "magma"))
    if "cluster" in ds:
        colourings.append(("cluster", "cluster", "categorical"))
    fig, axes = plt.subplots(
        len(descriptors), len(colourings), figsize=(3.8 * len(colourings), 3.5 * len(descriptors)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for i, desc in enumerate(descriptors):
        xy = ds.embedding.sel(descriptor=desc, n_components=d).values[:, :2]
        if d == 1:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
        label = _LABELS.get(str(desc), desc)
        for j, (name, values, cmap) in enumerate(colourings):
            ax = axes[i, j]
            if isinstance(values, str):
                values = ds[values].sel(descriptor=desc).values
            if name == "cluster":
                n_clusters = len(set(values[values >= 0]))
                _categorical(ax, xy, values, noise="-1", title=f"{n_clusters} clusters")
            elif cmap == "categorical":
                _categorical(ax, xy, values, noise=None, title=name)
            elif name == "outlier score":
                median = float(np.nanmedian(values)) if np.isfinite(values).any() else np.nan
                k = ds.outlier_score.attrs.get("n_neighbors", "k")
                rel = values / median if median > 0 else values
                sc = ax.scatter(xy[:, 0], xy[:, 1], c=rel, cmap=cmap, s=14)
                fig.colorbar(
                    sc, ax=ax, shrink=0.8, format="%.3g",
                    label=f"distance to {k}-th neighbour / median",
                )  # fmt: skip
                if np.isfinite(values).any():
                    top = int(np.nanargmax(values))
                    ax.annotate(
                        str(top), xy[top], fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            else:
                sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap=cmap, s=14)
                fig.colorbar(sc, ax=ax, shrink=0.8, label=name)
            ax.set_xlabel("MDS component 1", fontsize=8)
            ax.set_ylabel("MDS component 2" if d > 1 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            stress = float(ds.stress.sel(descriptor=desc, n_components=d))
            ax.set_title(f"{label}, stress {stress:.3f}", fontsize=8)
    fig.suptitle(f"Texture map of {ds.sizes['image']} images (MDS, D*={d}; components 1 and 2)")
    return _save(fig, path)


def plot_montage(
    ds: xr.Dataset, thumbnail: Callable[[int], np.ndarray], path: str | Path, *, grid: int = 6
) -> Path:
    """Thumbnails of the images nearest the centres of a grid laid over the 2-D map.

    ``thumbnail(i)`` returns the (s, s) picture of point ``i`` in [0, 1]; only the points
    shown are read.
    """
    plt = _pyplot()
    desc = "cnn" if "cnn" in ds.descriptor.values else ds.descriptor.values[0]
    xy = ds.embedding.sel(descriptor=desc, n_components=2).values[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    fig, axes = plt.subplots(grid, grid, figsize=(1.6 * grid, 1.6 * grid))
    for r in range(grid):
        for c in range(grid):
            ax = axes[r, c]
            ax.axis("off")
            centre = lo + (np.array([c, grid - 1 - r]) + 0.5) / grid * (hi - lo)
            cell = (hi - lo) / grid
            inside = np.all(np.abs(xy - centre) <= cell / 2 + 1e-12, axis=1)
            if inside.any():
                k = np.flatnonzero(inside)[np.argmin(((xy[inside] - centre) ** 2).sum(1))]
                ax.imshow(thumbnail(int(k)), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(f"What each region of the {_LABELS.get(str(desc), desc)} map looks like")
    return _save(fig, path)
