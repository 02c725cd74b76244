"""Incremental runs: a grown archive re-run vs a full run on the same files, side by side.

Builds an archive of N_old synthetic micrographs, maps it, adds N_new files, and times the
re-run against a clean run over all N_old + N_new files (library stages, sequential, so the
numbers are the work itself, not Prefect's start-up).

    python benchmarks/bench_incremental.py [--old 60] [--new 15] [--size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from microscale import pipeline, synth
from microscale.ingest import ingest_archive
from microscale.testing.peaks import print_machine

DESCRIPTORS = ("cnn", "ps")


def write_images(folder: Path, start: int, n: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        phi = synth.texture(rng.uniform(0, np.pi), rng.uniform(5, 15), rng.uniform(0.5, 2),
                            size=size, seed=i)  # fmt: skip
        tifffile.imwrite(folder / f"img_{i:05d}.tif", ((phi + 1) * 32767.5).astype(np.uint16))


def run_all(archive: Path, store: Path, *, tile: int, block: int) -> dict[str, float]:
    times = {}
    t = time.perf_counter()
    ingest_archive(archive, store, tile_size=tile)
    times["ingest"] = time.perf_counter() - t
    counts = {}
    stages = (
        ("features", pipeline.run_features),
        ("image features", pipeline.image_features),
        ("distances", pipeline.run_distances),
    )
    for name, fn in stages:
        t = time.perf_counter()
        for d in DESCRIPTORS:
            kw = {"block_size": block} if name == "distances" else {}
            c = fn(store, descriptor=d, **kw)
            counts[f"{name} {d}"] = (c.computed, c.computed + c.skipped)
        times[name] = time.perf_counter() - t
    t = time.perf_counter()
    for d in DESCRIPTORS:
        pipeline.embed(store, descriptor=d, n_components=range(1, 11))
    times["embed"] = time.perf_counter() - t
    times["_counts"] = counts
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=60)
    parser.add_argument("--new", type=int, default=15)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--block", type=int, default=16)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_images(tmp / "archive", 0, args.old, args.size)
        run_all(tmp / "archive", tmp / "grown", tile=args.size, block=args.block)
        write_images(tmp / "archive", args.old, args.new, args.size)
        inc = run_all(tmp / "archive", tmp / "grown", tile=args.size, block=args.block)
        full = run_all(tmp / "archive", tmp / "clean", tile=args.size, block=args.block)
    n = args.old + args.new
    print(f"# {args.old} images, then {args.new} new ({args.new / n:.0%} of {n}); "
          f"{args.size}x{args.size}, distance blocks of {args.block}")  # fmt: skip
    print(f"{'stage':<16} {'incremental s':>14} {'full s':>8} {'ratio':>7}")
    for k in ("ingest", "features", "image features", "distances", "embed"):
        print(f"{k:<16} {inc[k]:>14.2f} {full[k]:>8.2f} {inc[k] / full[k]:>7.2f}")
    ti = sum(v for k, v in inc.items() if k != "_counts")
    tf = sum(v for k, v in full.items() if k != "_counts")
    print(f"{'total':<16} {ti:>14.2f} {tf:>8.2f} {ti / tf:>7.2f}")
    print("\nunits computed / total (incremental run):")
    for k, (c, t) in inc["_counts"].items():
        print(f"  {k:<22} {c:>4} / {t:<4}")


if __name__ == "__main__":
    main()
