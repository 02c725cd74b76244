"""The features and distances stages on 1, 2 and 4 Dask CPU workers, side by side.

    python benchmarks/bench_workers.py [--workers 1,2,4] [--tiles 64] [--tile-size 128]
                                       [--n 2048] [--d 65536] [--block-size 256]

Two stores are made once; then, for each worker count ``w``, a fresh
``distributed.LocalCluster`` of ``w`` worker processes (one Dask task slot each, and
``max(1, cores // w)`` torch/BLAS threads each: the sizing rule of
:mod:`microscale.cluster`, applied by its ``ThreadLimits`` plugin; ``get_client`` itself
refuses more slots than cores -- hence a plain LocalCluster here, so that 4 workers can
be asked for on a 2-core box) runs, after a
warm-up that imports torch and loads the VGG-19 weights on every worker:

- **features**: :func:`microscale.pipeline.run_features` (real VGG-19, float32) on
  ``--tiles`` synthetic tiles of ``--tile-size`` pixels, one task per 4 tiles;
- **distances**: :func:`microscale.pipeline.run_distances` (``level="tile"``, one block
  pair per task) on ``--n`` synthetic texture-like vectors of length ``--d`` in blocks of
  ``--block-size``.

Each stage's records are cleared between runs, so every run computes the whole stage on
the same store. Printed: seconds, the rate, and the speed-up against 1 worker. On a box
with ``c`` cores the speed-up cannot pass ``c`` (and 1 worker already uses every core
through its threads): what is measured is the pipeline's overhead and the scaling of
tasks against threads. The defaults take about 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_distances import synthetic_store, texture_like  # noqa: E402
from bench_texture import conv_gflop  # noqa: E402

from microscale import pipeline as pl  # noqa: E402
from microscale import store as st  # noqa: E402
from microscale import synth  # noqa: E402
from microscale.cluster import ThreadLimits  # noqa: E402
from microscale.testing.peaks import print_machine

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _warm() -> int:
    """Import torch and load the model on a worker; return its torch threads."""
    import torch

    from microscale.texture import texture_vectors

    texture_vectors(np.zeros((1, 16, 16), np.float32), normalize=None, device="cpu")
    return torch.get_num_threads()


def tile_store(root: Path, n_tiles: int, size: int) -> None:
    """A store of ``n_tiles`` one-tile images, textures of the paper's 3-D task."""
    per_axis = int(np.ceil(n_tiles ** (1 / 3)))
    images = synth.grid_dataset(per_axis, size=size).images[:n_tiles].astype(np.float32)
    lo, hi = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    images = (images - lo) / (hi - lo)
    store = st.create_store(root, tile_size=size, tiles_per_chunk=4, features_chunk=4)
    st.append_tiles(
        store,
        images,
        image_index=np.arange(n_tiles),
        origins=np.zeros((n_tiles, 2), int),
        weights=np.ones(n_tiles),
    )
    ids = [f"img{i:05d}" for i in range(n_tiles)]
    st.append_images(store, image_ids=ids, paths=[f"/synthetic/{i}.png" for i in ids])


def main() -> None:
    import dask
    import distributed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts (1,2,4)")
    parser.add_argument("--tiles", type=int, default=64, help="tiles for the features stage")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--n", type=int, default=2048, help="vectors for the distances stage")
    parser.add_argument("--d", type=int, default=65_536, help="their length")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--store-dir", default=None)
    args = parser.parse_args()
    print_machine()
    counts = [int(v) for v in args.workers.split(",")]
    cores = os.cpu_count() or 1
    print(f"# Dask CPU workers {counts}; {platform.machine()}, {cores} cores, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="bench_workers_", dir=args.store_dir))
    try:
        feats, dists = tmp / "features", tmp / "distances"
        tile_store(feats, args.tiles, args.tile_size)
        X, _ = texture_like(args.n, args.d)
        synthetic_store(dists, X, features_chunk=args.block_size)
        del X
        nb = -(-args.n // args.block_size)
        pairs = args.n * (args.n - 1) / 2
        flop = conv_gflop(args.tile_size)
        print(f"# features: {args.tiles} tiles of {args.tile_size}^2 ({flop:.1f} GFLOP each), "
              f"{-(-args.tiles // 4)} tasks; distances: n={args.n}, d={args.d}, "
              f"{nb * (nb + 1) // 2} block pairs of {args.block_size}, one per task")  # fmt: skip
        rows = []
        for w in counts:
            inner = max(1, cores // w)
            env = {v: str(inner) for v in THREAD_VARIABLES}
            spawn = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
            spawn.update(env)  # (Dask's default sets 1 thread before the worker starts)
            with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
                cluster = distributed.LocalCluster(
                    n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0", env=env, memory_limit=None,
                )  # fmt: skip
            client = distributed.Client(cluster)
            client.register_plugin(ThreadLimits(inner, os.getpid()))  # as microscale.cluster does
            try:
                threads = sorted(set(client.run(_warm).values()))
                store = st.open_store(feats)
                store.clear_done("features.cnn")
                t = time.perf_counter()
                pl.run_features(feats, client=client, device="cpu", batch_size=4)
                t_feat = time.perf_counter() - t
                store = st.open_store(dists)
                store.clear_done("tile_distances.cnn")
                t = time.perf_counter()
                pl.run_distances(
                    dists, client=client, level="tile", block_size=args.block_size,
                    pairs_per_task=1,
                )  # fmt: skip
                t_dist = time.perf_counter() - t
            finally:
                client.close()
                cluster.close()
            rows.append((w, threads, t_feat, t_dist))
            print(f"  {w} worker(s) done: features {t_feat:.1f} s, distances {t_dist:.1f} s",
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    _, _, f1, d1 = rows[0]
    print(f"\n{'workers':>7} {'threads':>8} {'features s':>11} {'images/s':>9} {'speed-up':>9} "
          f"{'distances s':>12} {'pairs/s':>10} {'speed-up':>9}")  # fmt: skip
    for w, threads, tf, td in rows:
        th = ",".join(str(t) for t in threads)
        print(f"{w:>7} {th:>8} {tf:>11.1f} {args.tiles / tf:>9.2f} {f1 / tf:>8.2f}x "
              f"{td:>12.1f} {pairs / td:>10.0f} {d1 / td:>8.2f}x")  # fmt: skip
    print(f"  ({cores} cores: the speed-up is bounded by {cores}; speed-ups are against "
          f"{rows[0][0]} worker(s))")  # fmt: skip


if __name__ == "__main__":
    main()
