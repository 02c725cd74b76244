"""The paper's whole 3-D task at N = 1000, microscale against the paper's way, in one process.

The paper needed 30 minutes on one GPU for N = 1000 (12 min for ~5x10^5 pair distances at
~1 ms each, 18 min for MDS). This script makes the 1000 images, their texture vectors once,
then runs side by side on the same vectors:

- distances: microscale's blocked exact kernel vs a per-pair loop (what the paper did);
- MDS at D* in {2, 3, 4, 5, 6, 10, 50}: microscale's SMACOF vs scikit-learn's MDS in the
  paper's setting (random starts, n_init=4) -- skipped with --quick;
- R^2 for k and A and the regression-vector angle from both embeddings.

    python benchmarks/bench_grid_task.py [--size 256] [--n-per-axis 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from microscale import evaluate, synth
from microscale.distance import pairwise_distances
from microscale.manifold import mds, stress
from microscale.testing.peaks import print_machine, print_stages
from microscale.texture import texture_vectors

DIMS = (2, 3, 4, 5, 6, 10, 50)
PAPER_SECONDS = {"distances": 12 * 60, "MDS": 18 * 60}


def per_pair_loop(V: np.ndarray, pairs: int) -> float:
    """Seconds per pair of a Python loop over pairs (torch norm of the difference)."""
    t = torch.from_numpy(V)
    n = len(V)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, size=(pairs, 2))
    start = time.perf_counter()
    for i, j in idx:
        float(torch.linalg.vector_norm(t[i].double() - t[j].double()))
    return (time.perf_counter() - start) / pairs


def sklearn_paper_mds(D: np.ndarray, dim: int) -> np.ndarray:
    from sklearn.manifold import MDS
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return MDS(
            n_components=dim,
            metric_mds=True,
            metric="precomputed",
            n_init=4,
            init="random",
            max_iter=300,
            eps=1e-6,
            random_state=0,
            normalized_stress=False,
        ).fit_transform(D)  # fmt: skip


def table(name: str, X: dict[int, np.ndarray], D: np.ndarray, data) -> None:
    print(f"\n{name}")
    print(f"{'D*':>4} {'stress':>8} {'R2 k':>7} {'R2 A':>7} {'angle(bA,bk)':>13}")
    for d in sorted(X):
        x = X[d]
        print(f"{d:>4} {stress(D, x):>8.4f} {evaluate.r_squared(x, data.k):>7.3f} "
              f"{evaluate.r_squared(x, data.A):>7.3f} "
              f"{evaluate.regression_angle(x, data.A, data.k):>12.1f}°")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-per-axis", type=int, default=10)
    parser.add_argument("--device", default=None)
    parser.add_argument("--quick", action="store_true", help="skip scikit-learn's MDS")
    args = parser.parse_args()
    print_machine(device=args.device)
    print(f"# 3-D task, {args.n_per_axis**3} images of {args.size}x{args.size}; "
          f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"cuda={torch.cuda.is_available()}")  # fmt: skip
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = synth.grid_dataset(args.n_per_axis, size=args.size)
    times["images"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    V = texture_vectors(data.images, device=args.device, batch_size=8, progress=True)
    times["texture vectors"] = time.perf_counter() - t0
    n = len(V)
    n_pairs = n * (n - 1) // 2
    t0 = time.perf_counter()
    D = pairwise_distances(V, device=args.device)
    times["distances"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    X = mds(D, [d for d in DIMS if d < n], random_state=0, device=args.device)
    times["MDS"] = time.perf_counter() - t0
    loop = per_pair_loop(V, 300)
    total = sum(times.values())
    print(f"\n{'stage':<16} {'seconds':>9}  comparison")
    for k, v in times.items():
        note = ""
        if k == "distances":
            note = (f"{n_pairs / v:,.0f} pairs/s; per-pair loop {loop * 1e3:.2f} ms/pair "
                    f"-> {loop * n_pairs:.0f} s ({loop * n_pairs / v:.0f}x slower); "
                    f"paper {PAPER_SECONDS[k]} s ({PAPER_SECONDS[k] / v:.0f}x)")  # fmt: skip
        if k == "MDS":
            note = (
                f"all {len(X)} dimensions; paper {PAPER_SECONDS[k]} s ({PAPER_SECONDS[k] / v:.0f}x)"
            )
        print(f"{k:<16} {v:>9.1f}  {note}")
    print(f"{'total':<16} {total:>9.1f}  paper: 30 min for distances + MDS alone")
    print_stages(times, label="microscale")
    table("microscale", X, D, data)
    if not args.quick:
        t0 = time.perf_counter()
        Xs = {d: sklearn_paper_mds(D, d) for d in DIMS if d < n}
        ts = time.perf_counter() - t0
        print(f"\nscikit-learn MDS, paper setting (random starts, n_init=4): {ts:.1f} s "
              f"({ts / times['MDS']:.1f}x ours)")  # fmt: skip
        table("scikit-learn (paper setting)", Xs, D, data)


if __name__ == "__main__":
    main()
