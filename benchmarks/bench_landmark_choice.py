"""Which landmarks give landmark MDS the lower full stress: MaxMin or random (seeded)?

    python benchmarks/bench_landmark_choice.py [--n 3000] [--d 2048] [--landmarks 100,300]
                                               [--seeds 3] [--dims 2,3]

The data: three sets of ``n`` rows, each held in memory with its exact (n, n) distance
matrix (:func:`microscale.pairwise_distances`, the pipeline's kernel):

- ``texture``: texture-like vectors, positive and correlated (8 shared modes on a
  log-normal base; the rows ``bench_pipeline_scale.py`` writes), ``d`` long;
- ``texture+outliers``: the same with 1 % of the rows scaled far from the rest (odd
  micrographs in an archive);
- ``manifold``: the curved 3-D manifold of ``bench_landmark_mds.py``.

For each set, landmark count ``m`` and seed, both choices of
:func:`microscale.stages.landmarks.choose_store_landmarks`'s rule (``"maxmin"`` over the
whole set, ``"random"``) feed :func:`microscale.landmark.landmark_mds`, and the Kruskal
stress-1 of the **full** matrix is printed per dimension, with the ratio MaxMin / random
(below 1: MaxMin is better). The pipeline's default (``LANDMARK_METHOD``) is the one
that wins here.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

from microscale.testing.peaks import print_machine

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def datasets(n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    from bench_landmark_mds import manifold_points
    from bench_pipeline_scale import TextureRows

    tex = TextureRows(n, d, seed=seed)[0:n]
    odd = tex.copy()
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(n, size=max(1, n // 100), replace=False)
    odd[rows] *= rng.uniform(2.0, 4.0, size=(len(rows), 1)).astype(np.float32)
    return {"texture": tex, "texture+outliers": odd, "manifold": manifold_points(n, seed=seed)}


def main() -> None:
    from microscale.distance import pairwise_distances
    from microscale.landmark import choose_landmarks, landmark_mds
    from microscale.metric_mds import stress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--landmarks", default="100,300")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", default="2,3")
    args = parser.parse_args()
    print_machine()
    ms = [int(v) for v in args.landmarks.split(",")]
    dims = [int(v) for v in args.dims.split(",")]
    load = os.getloadavg()[0]
    print(f"# landmark choice, n = {args.n}, d = {args.d}, m = {ms}, {args.seeds} seeds; "
          f"{platform.machine()}, {os.cpu_count()} cores, load {load:.1f}")  # fmt: skip
    print(f"{'data':<18} {'m':>5} {'D*':>3} {'maxmin':>16} {'random':>16} {'ratio':>7}")
    wins = {"maxmin": 0, "random": 0}
    for name, X in datasets(args.n, args.d).items():
        D = pairwise_distances(X, device="cpu")
        for m in ms:
            out: dict[str, dict[int, list[float]]] = {"maxmin": {}, "random": {}}
            for seed in range(args.seeds):
                choice = {
                    "random": choose_landmarks(args.n, m, random_state=seed),
                    "maxmin": choose_landmarks(args.n, m, random_state=seed, D_fn=D.__getitem__),
                }
                for method, idx in choice.items():
                    for k in dims:
                        Y = landmark_mds(
                            D[np.ix_(idx, idx)], D[:, idx], k, landmarks=idx, device="cpu",
                            random_state=seed,
                        )  # fmt: skip
                        out[method].setdefault(k, []).append(stress(D, Y))
            for k in dims:
                a, b = np.array(out["maxmin"][k]), np.array(out["random"][k])
                ratio = a.mean() / b.mean()
                wins["maxmin" if ratio < 1 else "random"] += 1
                print(f"{name:<18} {m:>5} {k:>3} {a.mean():>8.4f}+-{a.std():.4f} "
                      f"{b.mean():>8.4f}+-{b.std():.4f} {ratio:>7.3f}", flush=True)  # fmt: skip
    print(f"\nlower mean full stress: maxmin in {wins['maxmin']} rows, random in {wins['random']}")


if __name__ == "__main__":
    main()
