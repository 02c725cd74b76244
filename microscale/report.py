"""The markdown report of ``microscale paper``: tables in the order of the paper."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["backbone_table", "summary_tables", "write_report"]

_NAMES = {"cnn": "CNN", "ps": "PS"}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mean_sd(da: xr.DataArray) -> str:
    vals = np.asarray(da).ravel()
    if vals.size > 1:
        return f"{vals.mean():.3f} ± {vals.std(ddof=1):.3f}"
    return f"{vals.mean():.3f}"


def angle_table(angle: xr.Dataset) -> str:
    """RMSE and stress at D* = 2 by A, N and method (mean ± sd over trials)."""
    rows = []
    for a in angle.A.values:
        for n in angle.n_images.values:
            row = [f"{a:g}", int(n)]
            for var in ("rmse", "stress"):
                row += [
                    _mean_sd(angle[var].sel(A=a, n_images=n, descriptor=m))
                    for m in angle.descriptor.values
                ]
            rows.append(row)
    methods = [_NAMES.get(str(m), str(m)) for m in angle.descriptor.values]
    header = ["A", "N", *[f"RMSE {m}" for m in methods], *[f"stress {m}" for m in methods]]
    return _table(header, rows)


def stress_table(stress: xr.DataArray) -> str:
    """Stress-1 by dimension (columns) and method (rows)."""
    dims = [int(d) for d in stress.n_components.values]
    rows = [
        [
            _NAMES.get(str(m), str(m)),
            *[f"{float(stress.sel(descriptor=m, n_components=d)):.3f}" for d in dims],
        ]
        for m in stress.descriptor.values
    ]
    return _table(["descriptor", *[f"D*={d}" for d in dims]], rows)


def grid_table(grid: xr.Dataset) -> str:
    """Table I: R^2 for k and A and the regression-vector angle by dimension."""
    rows = []
    for d in grid.n_components.values:
        row = [int(d)]
        for m in grid.descriptor.values:
            r2 = grid.r2.sel(descriptor=m, n_components=d)
            row += [
                f"{float(r2.sel(parameter='k')):.3f}",
                f"{float(r2.sel(parameter='A')):.3f}",
                f"{float(grid.regression_angle.sel(descriptor=m, n_components=d)):.1f}°",
            ]
        rows.append(row)
    header = ["D*"]
    for m in grid.descriptor.values:
        name = _NAMES.get(str(m), str(m))
        header += [f"R² k ({name})", f"R² A ({name})", f"angle(β_A, β_k) ({name})"]
    return _table(header, rows)


def backbone_table(angle: xr.Dataset, grid: xr.Dataset, *, d_star: int = 3) -> str:
    """One row per backbone: angle RMSE per A (first N, mean over trials), mean stress at
    D* = 2, and R^2 for k and A of the 3-D task at ``d_star`` (or the nearest D* run)."""
    dims = [int(d) for d in grid.n_components.values]
    d = min(dims, key=lambda v: (abs(v - d_star), v))
    n0 = angle.n_images.values[0]
    rows = []
    for m in angle.descriptor.values:
        row = [_NAMES.get(str(m), str(m))]
        for a in angle.A.values:
            row.append(f"{float(angle.rmse.sel(descriptor=m, A=a, n_images=n0).mean()):.3f}")
        row.append(f"{float(angle.stress.sel(descriptor=m, n_images=n0).mean()):.3f}")
        r2 = grid.r2.sel(descriptor=m, n_components=d)
        row += [f"{float(r2.sel(parameter=p)):.3f}" for p in ("k", "A")]
        rows.append(row)
    header = [
        "backbone",
        *[f"RMSE A={a:g}" for a in angle.A.values],
        "mean stress D*=2",
        f"R² k (D*={d})",
        f"R² A (D*={d})",
    ]
    return _table(header, rows)


def backbone_section(
    angle: xr.Dataset | None,
    grid: xr.Dataset | None,
    unavailable: Mapping[str, str] | None,
    *,
    grid_dims: Sequence[int] = (2, 3, 4, 5, 6, 10, 50),
) -> str:
    """The report's answer to the paper's open question (random vs trained networks)."""
    parts = [
        "\n### Backbones: can a random network embed microstructures as well as VGG-19?",
        "The paper's closing question, answered with its own tasks. `random:SEED` is "
        "Ustyuzhaninov et al.'s one-layer multi-scale random network (filters 3-55 px, "
        "1024 maps, one Gram matrix); `vgg19-imagenet` is torchvision's ImageNet VGG-19, "
        "Gatys-normalised; `ps` is the power-spectrum reference.",
    ]
    if angle is not None and grid is not None:
        n0 = int(angle.n_images.values[0])
        parts += [
            f"\nAngle task N = {n0} ({angle.sizes['trial']} trial(s); RMSE in rad, random "
            f"guess ≈ 0.907) and 3-D task N = {grid.sizes['image']}:",
            backbone_table(angle, grid),
            "\nAll dimensions of the 3-D task:",
            grid_table(
                grid.sel(n_components=[d for d in grid.n_components.values if d in grid_dims])
            ),
        ]
        shas = json.loads(angle.attrs.get("backbones_sha256", "{}"))
        if shas:
            parts.append("\n" + "; ".join(f"`{k}` sha256 `{v[:16]}…`" for k, v in shas.items()))
    for name, why in (unavailable or {}).items():
        parts.append(f"\n- `{name}`: {why}")
    return "\n".join(parts)


def summary_tables(
    *,
    angle: xr.Dataset,
    angle_stress: xr.Dataset,
    grid: xr.Dataset,
    synthesis: xr.Dataset | None,
    grid_dims: Sequence[int] = (2, 3, 4, 5, 6, 10, 50),
    backbone_angle: xr.Dataset | None = None,
    backbone_grid: xr.Dataset | None = None,
    backbones_unavailable: Mapping[str, str] | None = None,
) -> str:
    """The report's tables as markdown text (also what the CLI prints)."""
    parts = [
        "### Angle task: orientation RMSE (rad) and stress at D* = 2",
        "A random guess gives RMSE π/√12 ≈ 0.907.",
        angle_table(angle),
        f"\n### Stress vs dimension, angle task (N = {angle.n_images.values[0]}), by A",
    ]
    for a in angle_stress.A.values:
        parts += [f"\nA = {a:g}", stress_table(angle_stress.stress.sel(A=a))]
    parts += [
        f"\n### Stress vs dimension, 3-D task (N = {grid.sizes['image']})",
        stress_table(grid.stress),
        f"\n### 3-D task (Table I): R² of linear maps to k and A, N = {grid.sizes['image']}",
        grid_table(grid.sel(n_components=[d for d in grid.n_components.values if d in grid_dims])),
    ]
    if synthesis is not None:
        loss = synthesis.loss.values
        parts += [
            "\n### Texture synthesis (Fig. 1)",
            f"Texture loss from {loss[0]:.3g} (noise) to {loss[-1]:.3g} after {len(loss) - 1} "
            f"L-BFGS steps ({loss[0] / max(loss[-1], 1e-300):.0f}x lower).",
        ]
    if backbone_angle is not None or backbones_unavailable:
        parts.append(
            backbone_section(
                backbone_angle, backbone_grid, backbones_unavailable, grid_dims=grid_dims
            )
        )
    return "\n".join(parts)


def write_report(
    path: str | Path,
    *,
    config: Any,
    angle: xr.Dataset,
    angle_stress: xr.Dataset,
    grid: xr.Dataset,
    synthesis: xr.Dataset | None,
    timings: Mapping[str, float],
    files: Sequence[Path],
    backbone_angle: xr.Dataset | None = None,
    backbone_grid: xr.Dataset | None = None,
    backbones_unavailable: Mapping[str, str] | None = None,
) -> Path:
    """Write ``report.md`` with the tables, timings, provenance and the figures."""
    path = Path(path)
    versions = json.loads(grid.attrs["versions"])
    lines = [
        "# microscale paper: Lubbers, Lookman & Barros (PRE 96, 052111, 2017) reproduced",
        "",
        f"Images {config.size}×{config.size}; angle task N = {list(config.angle_n)}, "
        f"A = {list(config.amplitudes)}, {config.trials} trial(s); 3-D task "
        f"{config.grid_n}³ = {grid.sizes['image']} images. Device: {config.device or 'auto'}.",
        f"Weights sha256 `{grid.attrs.get('weights_sha256', '?')}`; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        summary_tables(
            angle=angle,
            angle_stress=angle_stress,
            grid=grid,
            synthesis=synthesis,
            grid_dims=config.grid_dims,
            backbone_angle=backbone_angle,
            backbone_grid=backbone_grid,
            backbones_unavailable=backbones_unavailable,
        ),
        "",
        "### Time",
        _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()]),
        "",
        "### Figures",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in files if p.suffix == ".png"]
    lines += ["", "### Data", *[f"- `{p.name}`" for p in files if p.suffix != ".png"]]
    path.write_text("\n".join(lines) + "\n")
    return path
