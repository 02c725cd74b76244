"""Progress within feature batches: what the per-forward-pass counts cost, side by side.

    python benchmarks/bench_progress.py [--tiles 96] [--tile-size 64] [--batch-size 4]
                                        [--chunk 48] [--reps 3] [--weights vgg19-normalized]

One Dask worker process (one task slot) computes the texture vectors of ``--tiles``
synthetic tiles in feature batches of ``--chunk`` tiles, ``--batch-size`` tiles per
forward pass, on stores made once, interleaved:

- **off**: ``run_features(on_done=None)``: no progress at all (no events, no listener);
- **on**: ``run_features(on_done=...)``: every forward pass counted on the worker and sent
  as a Dask event (at most every ``SEND_EVERY_S``), reported by the driver at most every
  ``REPORT_EVERY_S`` (:mod:`microscale.stages._unit_progress`).

Printed: best-of-``--reps`` seconds of each, the ratio on/off, and for "on" the reports
made within batches (counts strictly between two batches' ends) and their rate: what the
CLI bar and the Prefect artifact receive. The defaults take about a minute on a 2-core
CPU (the real VGG-19, fetched once and cached).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import distributed
import numpy as np

from microscale import store as st
from microscale.stages import _unit_progress
from microscale.stages import features as feat
from microscale.testing.peaks import print_machine
from microscale.testing.stores import fill


def make_store(path: Path, n_tiles: int, size: int, chunk: int) -> Path:
    rng = np.random.default_rng(0)
    store = st.create_store(path, tile_size=size, tiles_per_chunk=chunk, features_chunk=chunk)
    images = [
        (rng.random((4, size, size)).astype(np.float32), np.full(4, 100.0))
        for _ in range(n_tiles // 4)
    ]
    fill(store, images)
    return path


def run(root: Path, client, args, on_done) -> float:  # noqa: ANN001
    t = time.perf_counter()
    feat.run_features(
        root, descriptor="cnn", client=client, weights=args.weights, device="cpu",
        batch_size=args.batch_size, on_done=on_done,
    )  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=96)
    p.add_argument("--tile-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--chunk", type=int, default=48)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--weights", default="vgg19-normalized")
    args = p.parse_args()
    print_machine()
    print(f"{platform.processor() or platform.machine()}; {args.tiles} tiles of "
          f"{args.tile_size}^2, batches of {args.chunk}, {args.batch_size} per forward pass, "
          f"weights {args.weights}; SEND_EVERY_S {_unit_progress.SEND_EVERY_S}, "
          f"REPORT_EVERY_S {_unit_progress.REPORT_EVERY_S}")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench_progress_"))
    times: dict[str, list[float]] = {"off": [], "on": []}
    within: list[tuple[int, float]] = []
    try:
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,  # fmt: skip
            distributed.Client(cluster) as client,
        ):
            warm = make_store(work / "warm", args.chunk, args.tile_size, args.chunk)
            run(warm, client, args, None)  # imports torch, builds the network on the worker
            for rep in range(args.reps):
                for mode in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                    root = make_store(work / f"{mode}{rep}", args.tiles, args.tile_size,
                                      args.chunk)  # fmt: skip
                    seen: list[int] = []
                    on_done = None if mode == "off" else (lambda d, t, seen=seen: seen.append(d))
                    times[mode].append(run(root, client, args, on_done))
                    if mode == "on":
                        ends = set(range(0, args.tiles + 1, args.chunk)) | {args.tiles}
                        within.append((len([d for d in seen if d not in ends]), times[mode][-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    off, on = min(times["off"]), min(times["on"])
    print(f"off: best {off:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times['off'])})")
    print(f"on:  best {on:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times['on'])})")
    print(f"ratio on/off (best of {args.reps}): {on / off:.3f}")
    for n, seconds in within:
        print(f"on: {n} reports within batches in {seconds:.2f} s ({n / seconds:.2f} per s)")


if __name__ == "__main__":
    main()
