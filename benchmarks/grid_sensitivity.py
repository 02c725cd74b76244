"""The 3-D task (the calibration's validation) for several generator settings, side by side.

The generator's noise is calibrated on the angle task only
(``benchmarks/calibrate_generator.py``); the 3-D task -- 1000 images on the paper's
(theta, k, A) grid, embedded at D* = 2..10, ordinary least squares to k and to A -- is
then run, never tuned on. This script runs it for the calibrated setting and for the
settings given with ``--noise`` (neighbours of the calibrated one, the release before the
calibration), so that the sensitivity of the paper's central result to the unstated
constants is a measured table, not a guess.

    python benchmarks/grid_sensitivity.py [--size 256] [--grid-n 10] \
        [--noise calibrated,by-eye,2:1:0.5:0.08] [--dims 2,3,4,5,6,10]

``L:O:p:amplitude`` gives an explicit setting (lattice, octaves, persistence, amplitude;
``:shared`` appended for shared components). Prints one markdown table (R² of k and A and
the regression angle per D*, CNN and PS) and writes ``benchmarks/results/grid_*.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from microscale import synth
from microscale.paper import PaperConfig, run_grid_task

RESULTS = Path(__file__).parent / "results"


def parse_noise(spec: str) -> tuple[str, synth.PerlinNoise]:
    if spec in synth.NOISE_PRESETS:
        return spec, synth.NOISE_PRESETS[spec]
    parts = spec.split(":")
    components = parts[4] if len(parts) > 4 else "independent"
    noise = synth.PerlinNoise(
        float(parts[3]), int(parts[0]), int(parts[1]), 2, float(parts[2]), components
    )
    return spec, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--grid-n", type=int, default=10)
    parser.add_argument("--noise", type=lambda s: s.split(","), default=["calibrated"])
    parser.add_argument(
        "--dims", type=lambda s: tuple(int(d) for d in s.split(",")), default=(2, 3, 4, 5, 6, 10)
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    rows = []
    print(f"# 3-D task, {args.grid_n}^3 images of {args.size}x{args.size}")
    header = "| setting | descriptor | " + " | ".join(
        f"D*={d} R² k / R² A / angle" for d in args.dims
    )
    print(header + " | s |")
    print("|---" * (len(args.dims) + 3) + "|")
    for spec in args.noise:
        name, noise = parse_noise(spec)
        config = PaperConfig(
            grid_size=args.size,
            grid_n=args.grid_n,
            grid_dims=args.dims,
            curve_dims=args.dims,
            noise=noise,
            synthesis_steps=0,
        )
        t0 = time.perf_counter()
        grid = run_grid_task(config)
        seconds = time.perf_counter() - t0
        row = {"setting": name, "noise": noise.as_dict(), "seconds": seconds, "metrics": {}}
        for m in grid.descriptor.values:
            cells, metrics = [], {}
            for d in args.dims:
                r2 = grid.r2.sel(descriptor=m, n_components=d)
                rk, ra = float(r2.sel(parameter="k")), float(r2.sel(parameter="A"))
                ang = float(grid.regression_angle.sel(descriptor=m, n_components=d))
                metrics[d] = {"r2_k": rk, "r2_A": ra, "angle": ang}
                cells.append(f"{rk:.3f} / {ra:.3f} / {ang:.0f}°")
            row["metrics"][str(m)] = metrics
            row.setdefault("stress", {})[str(m)] = {
                int(d): float(grid.stress.sel(descriptor=m, n_components=d))
                for d in grid.n_components.values
            }
            print(f"| {name} | {m} | " + " | ".join(cells) + f" | {seconds:.0f} |", flush=True)
        rows.append(row)
    out = args.out or RESULTS / f"grid_{args.size}.json"
    out.write_text(json.dumps({"args": vars(args) | {"out": str(out)}, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
