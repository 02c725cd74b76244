"""Benchmark: landmark MDS against full MDS, and what the approximation costs in stress.

Usage::

    python benchmarks/bench_landmark_mds.py [--n 2000] [--threads 1] [--device cpu]
    python benchmarks/bench_landmark_mds.py --n 20000   # the issue's target, landmarks only

The data: ``n`` points on a curved 3-D manifold (an angle, a frequency and an amplitude)
mapped into 64 dimensions by random cosines, plus isotropic noise. The landmark method only
ever computes the ``(n, m)`` distances to its landmarks (``scipy.spatial.distance.cdist``),
never ``(n, n)``; for ``n <= 5000`` the full matrix and full :func:`microscale.mds` are run
side by side. Every stress is Kruskal's stress-1 of the full matrix, computed block-wise by
:func:`microscale.metric_mds.stress_from_rows` -- the price of the approximation.
Landmarks are chosen by MaxMin (farthest point); its time is in the "choose" column.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from scipy.spatial.distance import cdist

from microscale.landmark import choose_landmarks, landmark_mds
from microscale.metric_mds import mds, stress_from_rows
from microscale.testing.peaks import print_machine

DIMS = (2, 3, 10)
LANDMARKS = (200, 500, 1000)
FULL_MAX_N = 5000


def manifold_points(n: int, *, n_features: int = 64, noise: float = 0.05, seed: int = 0):
    """(n, n_features) noisy vectors on a curved 3-D manifold."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, np.pi, n)
    freq = rng.uniform(5.0, 15.0, n)
    amp = rng.uniform(0.5, 2.0, n)
    latent = np.stack([np.cos(2 * theta), np.sin(2 * theta), freq / 10.0, amp], axis=1)
    weights = rng.normal(size=(4, n_features))
    phases = rng.uniform(0.0, 2 * np.pi, n_features)
    points = np.cos(1.5 * latent @ weights + phases) * (amp[:, None] / 2.0)
    points += noise * rng.normal(size=points.shape)
    return points


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of points (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = default)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if any)")
    parser.add_argument(
        "--landmarks", type=int, nargs="+", default=list(LANDMARKS), help="values of m"
    )
    args = parser.parse_args()
    print_machine()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = args.n
    print("# Machine")
    print(f"platform      : {platform.platform()}, os.cpu_count={os.cpu_count()}")
    print(f"load average  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"torch         : {torch.__version__}, {torch.get_num_threads()} threads, {device}")

    P, t_data = timed(manifold_points, n)
    print(f"\n# Data: n = {n}, 64-D vectors on a curved 3-D manifold ({t_data:.2f} s)")

    def rows(i0: int, i1: int) -> np.ndarray:
        return cdist(P[i0:i1], P)

    mds(rows(0, 100)[:, :100], [2, 3], device=device)  # warm-up

    print("\n| method | m | D* | choose (s) | cdist (s) | embed (s) | total (s) | stress-1 |")
    print("|---|---|---|---|---|---|---|---|")
    full_stress = {}
    if n <= FULL_MAX_N:
        D, t_dist = timed(cdist, P, P)
        embeddings, t_embed = timed(mds, D, list(DIMS), device=device)
        for k in DIMS:
            full_stress[k] = stress_from_rows(rows, embeddings[k])
            print(
                f"| full mds | {n} | {k} | - | {t_dist:.2f} | {t_embed:.2f} (all D*) | "
                f"{t_dist + t_embed:.2f} | {full_stress[k]:.4f} |"
            )
        del D
    for m in args.landmarks:
        if m >= n:
            continue
        idx, t_choose = timed(
            choose_landmarks, n, m, random_state=0, D_fn=lambda i: cdist(P[i : i + 1], P)[0]
        )
        D_rest, t_dist = timed(cdist, P, P[idx])
        D_land = D_rest[idx]
        for k in DIMS:
            X, t_embed = timed(landmark_mds, D_land, D_rest, k, landmarks=idx, device=device)
            s = stress_from_rows(rows, X)
            ratio = f" ({s / full_stress[k]:.2f}x full)" if k in full_stress else ""
            print(
                f"| landmark | {m} | {k} | {t_choose:.2f} | {t_dist:.2f} | {t_embed:.2f} | "
                f"{t_choose + t_dist + t_embed:.2f} | {s:.4f}{ratio} |"
            )


if __name__ == "__main__":
    main()
