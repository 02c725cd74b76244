"""Figures in the spirit of the paper's, drawn from the result Datasets (matplotlib, Agg).

Every function takes an :class:`xarray.Dataset` written by :mod:`microscale.paper` and a
path, and writes one PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "plot_angle_curves",
    "plot_angle_embeddings",
    "plot_grid_embedding",
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


def plot_map(ds: xr.Dataset, path: str | Path) -> Path:
    """The archive map: 2-D embedding per descriptor, coloured by each ground-truth
    parameter when there is one, else by top-level folder, then by the descriptor's
    outlier score and cluster (grey: noise) when the Dataset has them."""
    plt = _pyplot()
    descriptors = list(ds.descriptor.values)
    d = 2 if 2 in ds.n_components else int(ds.n_components[-1])
    colourings: list[tuple[str, np.ndarray | str, str]] = []
    for p in ("theta", "k", "A"):
        if p in ds.coords and np.isfinite(ds[p].values).any():
            colourings.append((p, ds[p].values, "twilight" if p == "theta" else "viridis"))
    if not colourings:
        folders = np.array([str(s).split("/")[0] for s in ds.image_path.values])
        _, codes = np.unique(folders, return_inverse=True)
        colourings.append(("folder", codes, "tab10"))
    if "outlier_score" in ds:  # per descriptor: the name of the variable
        colourings.append(("outlier score", "outlier_score", "magma"))
    if "cluster" in ds:
        colourings.append(("cluster", "cluster", "tab10"))
    fig, axes = plt.subplots(
        len(descriptors), len(colourings), figsize=(3.8 * len(colourings), 3.3 * len(descriptors)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for i, desc in enumerate(descriptors):
        xy = ds.embedding.sel(descriptor=desc, n_components=d).values[:, :2]
        if d == 1:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
        for j, (name, values, cmap) in enumerate(colourings):
            ax = axes[i, j]
            if isinstance(values, str):
                values = ds[values].sel(descriptor=desc).values
            if name == "cluster":
                noise = values < 0
                ax.scatter(xy[noise, 0], xy[noise, 1], c="lightgrey", s=10, label="noise")
                sc = ax.scatter(
                    xy[~noise, 0], xy[~noise, 1], c=values[~noise] % 10, cmap=cmap,
                    vmin=0, vmax=9, s=14,
                )  # fmt: skip
                ax.set_xlabel(f"{len(set(values[~noise]))} clusters, {noise.sum()} noise (grey)")
                fig.colorbar(sc, ax=ax, shrink=0.8, label="cluster (mod 10)")
            else:
                sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap=cmap, s=14)
                fmt = "%.2g" if name == "outlier score" else None
                fig.colorbar(sc, ax=ax, shrink=0.8, label=name, format=fmt)
            if name == "outlier score" and np.isfinite(values).any():
                top = int(np.nanargmax(values))
                ax.annotate(
                    str(top), xy[top], fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
            ax.set_xticks([])
            ax.set_yticks([])
            stress = float(ds.stress.sel(descriptor=desc, n_components=d))
            ax.set_title(f"{_LABELS.get(str(desc), desc)}, stress {stress:.3f}", fontsize=8)
    fig.suptitle(f"Texture map of {ds.sizes['image']} images (MDS, D*={d})")
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
