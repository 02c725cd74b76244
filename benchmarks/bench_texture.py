"""Texture vectors: batched vs one image at a time, side by side in one process.

Prints images/s and achieved GFLOP/s for each batch size against the one-at-a-time
baseline, and the machine's fp32 GEMM rate for scale.

    python benchmarks/bench_texture.py [--size 256] [--n 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from microscale import synth
from microscale.texture import texture_vectors


def conv_gflop(size: int) -> float:
    """Forward-pass GFLOP to conv5_1 for one size x size image (2 flops per MAC)."""
    blocks = [
        (1, [(3, 64), (64, 64)]),
        (2, [(64, 128), (128, 128)]),
        (4, [(128, 256)] + [(256, 256)] * 3),
        (8, [(256, 512)] + [(512, 512)] * 3),
        (16, [(512, 512)]),
    ]
    total = 0.0
    for down, convs in blocks:
        pixels = (size // down) ** 2
        total += sum(2 * 9 * cin * cout * pixels for cin, cout in convs)
    return total / 1e9


def gemm_gflops(device: str, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    reps, start = 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def rate(images: np.ndarray, batch_size: int, device: str) -> float:
    texture_vectors(images[:batch_size], batch_size=batch_size, device=device)  # warm-up
    start = time.perf_counter()
    texture_vectors(images, batch_size=batch_size, device=device)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="2,4,8,16")
    args = parser.parse_args()
    images = synth.angle_dataset(args.n, A=2.0, size=args.size).images
    flop = conv_gflop(args.size)
    peak = gemm_gflops(args.device)
    print(f"# texture vectors, {args.n} images of {args.size}x{args.size}, device {args.device}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    print(f"# forward pass {flop:.1f} GFLOP/image; fp32 GEMM {peak:.0f} GFLOP/s\n")
    base = rate(images, 1, args.device)
    print(f"{'batch':>6} {'images/s':>9} {'GFLOP/s':>8} {'of GEMM':>8} {'vs batch 1':>11}")
    print(f"{1:>6} {base:>9.2f} {base * flop:>8.1f} {base * flop / peak:>8.0%} {1.0:>10.2f}x")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        if bs == 1 or bs > args.n:
            continue
        r = rate(images, bs, args.device)
        print(f"{bs:>6} {r:>9.2f} {r * flop:>8.1f} {r * flop / peak:>8.0%} {r / base:>10.2f}x")


if __name__ == "__main__":
    main()
