"""Sketched texture vectors against the full ones on the paper's 3-D task.

    python benchmarks/bench_sketch.py [--n-per-axis 5] [--size 64] [--ks 256,1024,4096]
                                      [--device cpu]

Computes the texture vectors of ``synth.grid_dataset(n_per_axis, size=size)`` once, then,
for each sketch length k and for the full vectors (d = 305,888), in one process:
bytes per vector, the time of ``pairwise_distances``, the distortion of the distances
(median / p99 / max relative error, with the Johnson-Lindenstrauss expectation
``0.674 / sqrt(2 k)`` for the median), Kruskal stress of the MDS embedding at D* = 2, 3
and 10 (against the distances it was made from), and R^2 of k and A on the embedding at
D* = 3 and 10. Ratios are against the full vectors.

The defaults (125 images of 64x64) take 1-2 minutes on a 2-core CPU; the paper's task is
``--n-per-axis 10 --size 256``. Timings on a shared machine are noisy. With few images the
pairs' errors are strongly correlated (n points span only n - 1 directions), so the
measured median distortion varies with ``--seed`` around the JL value (at k = 1024 and
125 images: 0.014 to 0.021 over seeds 0-2, against 0.015 expected). At n = 125 the
distance time is dominated by fixed overheads; the cost ratio approaches d / k for
large n.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from microscale import evaluate, synth
from microscale.distance import pairwise_distances
from microscale.metric_mds import mds, stress
from microscale.sketch import distortion, sketch
from microscale.testing.peaks import print_machine
from microscale.texture import texture_vectors

STRESS_DIMS = (2, 3, 10)
R2_DIMS = (3, 10)


def best_time(fn, repeat: int = 3) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-axis", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ks", default="256,1024,4096")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    print_machine()
    ks = [int(k) for k in args.ks.split(",")]

    data = synth.grid_dataset(args.n_per_axis, size=args.size)
    n = len(data.k)
    print(f"# 3-D task, {n} images of {args.size}x{args.size}; {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, "
          f"cuda={torch.cuda.is_available()}")  # fmt: skip
    t0 = time.perf_counter()
    V = texture_vectors(data.images, device=args.device, batch_size=8)
    print(f"texture vectors: {V.shape} in {time.perf_counter() - t0:.1f} s")

    dims = [d for d in STRESS_DIMS if d < n]
    rows = []
    for k in [None, *ks]:
        if k is None:
            name, S, t_sketch = "full", V, 0.0
        else:
            t0 = time.perf_counter()
            S = sketch(V, n_components=k, seed=args.seed, device=args.device)
            t_sketch = time.perf_counter() - t0
            name = f"k={k}"
        t_dist, D = best_time(lambda S=S: pairwise_distances(S, device=args.device))
        X = mds(D, dims, random_state=0, device=args.device)
        err = distortion(V, S) if k is not None else None
        rows.append({
            "name": name,
            "bytes": S.shape[1] * S.dtype.itemsize,
            "t_sketch": t_sketch,
            "t_dist": t_dist,
            "err": err,
            "stress": {d: stress(D, X[d]) for d in dims},
            "r2k": {d: evaluate.r_squared(X[d], data.k) for d in R2_DIMS if d in X},
            "r2A": {d: evaluate.r_squared(X[d], data.A) for d in R2_DIMS if d in X},
        })  # fmt: skip

    full = rows[0]
    print("\nstorage and time (ratios: full / sketch)")
    print(f"{'':>8} {'bytes/vec':>10} {'ratio':>7} {'sketch s':>9} {'dist s':>8} {'ratio':>7}")
    for r in rows:
        print(f"{r['name']:>8} {r['bytes']:>10,} {full['bytes'] / r['bytes']:>6.0f}x "
              f"{r['t_sketch']:>9.2f} {r['t_dist']:>8.4f} "
              f"{full['t_dist'] / r['t_dist']:>6.0f}x")  # fmt: skip

    print("\ndistance distortion (relative error of |s_i - s_j| against |x_i - x_j|)")
    print(f"{'':>8} {'median':>8} {'JL med':>8} {'p99':>8} {'max':>8}")
    for r in rows[1:]:
        e = r["err"]
        print(f"{r['name']:>8} {e['median']:>8.4f} {0.674 * e['jl_sigma']:>8.4f} "
              f"{e['p99']:>8.4f} {e['max']:>8.4f}")  # fmt: skip

    print("\nstress and R^2 of the MDS embedding (in brackets: change against full)")
    head = " ".join(f"{'stress D*=' + str(d):>18}" for d in dims)
    head += " ".join(f" {'R2 ' + p + ' D*=' + str(d):>17}" for d in R2_DIMS for p in "kA")
    print(f"{'':>8} {head}")
    for r in rows:
        cells = [f"{r['stress'][d]:>8.4f} ({r['stress'][d] - full['stress'][d]:+.4f})"
                 for d in dims]  # fmt: skip
        for d in R2_DIMS:
            for key in ("r2k", "r2A"):
                if d in r[key]:
                    v, v0 = r[key][d], full[key][d]
                    cells.append(f"{v:>7.4f} ({v - v0:+.4f})")
        print(f"{r['name']:>8} " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
