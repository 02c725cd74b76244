"""The in-memory distance kernel of this tree against the same kernel at a git revision.

    python benchmarks/bench_kernel_revisions.py [--baseline HEAD] [--n 4096] [--d 305888]
                                                [--threads 2] [--repeat 3]

Loads ``microscale/distance.py`` as it was at ``--baseline`` beside the working tree's
(the other ``microscale`` modules are today's), makes ``--n`` texture-like vectors (the
data of ``bench_distances.py``) and times :func:`pairwise_distances` of both, interleaved,
best of ``--repeat``, in one process. Prints each one's pairs/s and share of the float32
GEMM peak (``torch.mm`` of the kernel's shape, measured before and after the timings, the
better of the two), the ratio new/baseline, and the largest difference between the two
matrices (0 when a change is bit-identical, which is what a speed change must be).

Timings on a machine shared with other work are noisy; the interleaving keeps the ratio
fair, the shares of the peak are best read on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from bench_distances import gemm_rate, texture_like

import microscale.distance as current
from microscale.testing.peaks import print_machine

REPO = Path(__file__).resolve().parents[1]


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """Import the file `path` of the repository as it was at `revision`, as module `name`."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="microscale-baseline-"))
    file = folder / Path(path).name
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision (default HEAD)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=305_888)
    parser.add_argument("--block-size", type=int, default=current.DEFAULT_BLOCK_SIZE)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    baseline = module_at(args.baseline, "microscale/distance.py", "baseline_distance")
    n, d, b = args.n, args.d, args.block_size

    t = time.perf_counter()
    X, _ = texture_like(n, d)
    print(
        f"torch {torch.__version__}, {args.threads} threads, n={n}, d={d}, block={b}; "
        f"data {X.nbytes / 1e9:.1f} GB made in {time.perf_counter() - t:.1f} s"
    )
    peak = gemm_rate(b, d, torch.float32) * 1e9  # flop/s
    pairs = n * (n - 1) / 2
    best = {"baseline": np.inf, "this tree": np.inf}
    kernels = {"baseline": baseline.pairwise_distances, "this tree": current.pairwise_distances}
    results: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name, kernel in kernels.items():
            results.pop(name, None)
            t = time.perf_counter()
            results[name] = kernel(X, block_size=b)
            best[name] = min(best[name], time.perf_counter() - t)
    peak = max(peak, gemm_rate(b, d, torch.float32) * 1e9)
    peak_pairs = peak / (2 * d)
    print(f"float32 GEMM peak {peak / 1e9:.1f} GFLOP/s = {peak_pairs:,.0f} pairs/s")
    print(f"{'kernel':<28}{'seconds':>10}{'pairs/s':>12}{'% fp32 peak':>13}")
    for name, seconds in best.items():
        label = f"{name} ({args.baseline})" if name == "baseline" else name
        rate = pairs / seconds
        print(f"{label:<28}{seconds:>10.2f}{rate:>12,.0f}{100 * rate / peak_pairs:>12.1f}%")
    print(f"this tree / baseline: {best['baseline'] / best['this tree']:.3f}x faster")
    diff = np.abs(results["this tree"] - results["baseline"]).max()
    print(f"largest difference between the two matrices: {diff:.3g}")


if __name__ == "__main__":
    main()
