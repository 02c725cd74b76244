"""Benchmark: microscale's MDS against scikit-learn's on a realistic distance matrix.

Usage::

    python benchmarks/bench_mds.py [--n 1000] [--threads 1] [--device cpu] [--skip-paper]

The matrix: distances between ``n`` synthetic 256-dimensional vectors that lie on a curved
3-D manifold (an angle, a frequency and an amplitude, like the paper's theta, k and A)
plus isotropic noise -- Euclidean in 256 dimensions, far from Euclidean in 1 to 10, like
the CNN texture distances. Everything runs in one process and prints tables:

1. the classical-MDS eigenproblem: full ``scipy.linalg.eigh`` (what scikit-learn does)
   against ``microscale.classical_mds`` (top eigenpairs only);
2. ``microscale.mds`` for D* = 1..10 in one call, and one call per dimension, against
   scikit-learn's ``MDS(init="classical_mds", n_init=1)`` per dimension (its best setting,
   run with one BLAS thread, which is ~20x faster than the default on a small box);
3. scikit-learn's paper-era setting (random starts, ``n_init=4``) for a couple of dims.

Stress is Kruskal's stress-1 from ``microscale.stress`` for every embedding. The ratio
column is scikit-learn's time over ours. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.linalg
import sklearn
import torch
from scipy.spatial.distance import pdist, squareform
from sklearn.manifold import MDS
from threadpoolctl import threadpool_limits

from microscale.metric_mds import classical_mds, mds_with_info, stress
from microscale.testing.peaks import print_machine, print_stages

DIMS = tuple(range(1, 11))
PAPER_DIMS = (2, 3)


def manifold_distances(n: int, *, n_features: int = 256, noise: float = 0.05, seed: int = 0):
    """(n, n) distances between noisy high-dimensional vectors on a curved 3-D manifold."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, np.pi, n)  # orientation, periodic in pi
    freq = rng.uniform(5.0, 15.0, n)
    amp = rng.uniform(0.5, 2.0, n)
    latent = np.stack([np.cos(2 * theta), np.sin(2 * theta), freq / 10.0, amp], axis=1)
    weights = rng.normal(size=(4, n_features))
    phases = rng.uniform(0.0, 2 * np.pi, n_features)
    vectors = np.cos(1.5 * latent @ weights + phases) * (amp[:, None] / 2.0)
    vectors += noise * rng.normal(size=vectors.shape)
    return squareform(pdist(vectors))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def sklearn_mds(D: np.ndarray, k: int, *, init: str, n_init: int):
    est = MDS(
        n_components=k,
        metric_mds=True,
        metric="precomputed",
        init=init,
        n_init=n_init,
        max_iter=300,
        eps=1e-6,
        random_state=0,
        normalized_stress=False,
    )
    with threadpool_limits(1):
        X = est.fit_transform(D)
    return X, est.n_iter_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of points (default 1000)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for our runs (default 1, like sklearn's 1 BLAS thread; "
        "0 = torch's default). More threads only pay on an idle machine: on a shared box "
        "every OpenMP barrier can wait a scheduler slice for a descheduled thread.",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if any)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the n_init=4 runs")
    args = parser.parse_args()
    print_machine(device=args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    print("# Machine")
    print(f"platform      : {platform.platform()}")
    cpu = platform.processor() or platform.machine()
    print(f"cpu           : {cpu}, os.cpu_count={os.cpu_count()}")
    print(f"load average  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"torch         : {torch.__version__}, {torch.get_num_threads()} threads, device={device}"
    )
    if device.startswith("cuda"):
        print(f"gpu           : {torch.cuda.get_device_name(device)}")
    print(f"scikit-learn  : {sklearn.__version__} (MDS with 1 BLAS thread)")

    D, t_data = timed(manifold_distances, args.n)
    print(f"\n# Data: n = {args.n}, 256-D vectors on a curved 3-D manifold ({t_data:.2f} s)")

    # Warm up torch / the allocator / scipy once on a small problem.
    mds_with_info(D[:100, :100], [1, 2], device=device)

    print("\n# Classical MDS eigenproblem (top 10 eigenpairs)")
    B = np.square(D)
    B -= B.mean(axis=0, keepdims=True)
    B -= B.mean(axis=1, keepdims=True)
    B *= -0.5
    with threadpool_limits(1):
        _, t_full1 = timed(scipy.linalg.eigh, B)
    _, t_full = timed(scipy.linalg.eigh, B)
    _, t_ours = timed(classical_mds, D, max(DIMS), device=device)
    print(f"{'method':<44}{'seconds':>10}")
    print(f"{'scipy.linalg.eigh full, 1 BLAS thread':<44}{t_full1:>10.3f}")
    print(f"{'scipy.linalg.eigh full, default threads':<44}{t_full:>10.3f}")
    print(f"{'microscale.classical_mds (validation+eigsh)':<44}{t_ours:>10.3f}")

    print(f"\n# Metric MDS, D* = {DIMS[0]}..{DIMS[-1]}")
    fit, t_all = timed(mds_with_info, D, list(DIMS), device=device)
    infos = fit.info
    rows = []
    for k in DIMS:
        fit_k, t_k = timed(mds_with_info, D, k, device=device)
        info_k = fit_k.info[k]
        (X_skl, it_skl), t_skl = timed(sklearn_mds, D, k, init="classical_mds", n_init=1)
        rows.append((k, t_k, info_k, t_skl, stress(D, X_skl), it_skl))
    header = (
        f"{'D*':>3} {'ours s':>8} {'ours stress':>12} {'it':>4} | {'sklearn s':>9} "
        f"{'sk stress':>12} {'it':>4} | {'ratio':>6} {'rel. stress':>11}"
    )
    print(header)
    print("-" * len(header))
    for k, t_k, info, t_skl, s_skl, it_skl in rows:
        print(
            f"{k:>3} {t_k:>8.3f} {info.stress:>12.6f} {info.n_iter:>4} | {t_skl:>9.3f} "
            f"{s_skl:>12.6f} {it_skl:>4} | {t_skl / t_k:>6.1f} {info.stress / s_skl - 1:>+11.2e}"
        )
    t_skl_total = sum(r[3] for r in rows)
    t_sep_total = sum(r[1] for r in rows)
    print("-" * len(header))
    print(f"ours, one call for all D*        : {t_all:8.3f} s")
    print_stages(
        {"validation + classical start": t_ours, "SMACOF, D* = 1..10": max(t_all - t_ours, 0.0)},
        label="microscale.mds, one call for all D*; the start timed alone above",
    )
    same = all(
        abs(infos[k].stress / r[2].stress - 1) < 1e-4 for k, r in zip(DIMS, rows, strict=True)
    )
    print(f"  (same stresses as per-D* calls : {same})")
    print(f"ours, one call per D* (sum)      : {t_sep_total:8.3f} s")
    print(f"sklearn, one call per D* (sum)   : {t_skl_total:8.3f} s")
    print(f"ratio sklearn / ours (one call)  : {t_skl_total / t_all:8.1f}")
    print(
        f"stress ours <= sklearn for all D*: {all(r[2].stress <= r[4] * (1 + 1e-6) for r in rows)}"
    )

    if args.skip_paper:
        return
    print(f"\n# Paper-era scikit-learn: init='random', n_init=4, D* in {PAPER_DIMS}")
    header = (
        f"{'D*':>3} {'sklearn s':>9} {'sk stress':>12} | {'ours s':>8} {'ours stress':>12} "
        f"| {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for k in PAPER_DIMS:
        (X_skl, _), t_skl = timed(sklearn_mds, D, k, init="random", n_init=4)
        fit_k, t_k = timed(mds_with_info, D, k, device=device)
        info_k = fit_k.info[k]
        print(
            f"{k:>3} {t_skl:>9.3f} {stress(D, X_skl):>12.6f} | {t_k:>8.3f} "
            f"{info_k.stress:>12.6f} | {t_skl / t_k:>6.1f}"
        )


if __name__ == "__main__":
    main()
