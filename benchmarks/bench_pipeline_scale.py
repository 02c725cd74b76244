"""The pipeline's stages at growing N: wall time, peak memory per process, bytes on disk.

    python benchmarks/bench_pipeline_scale.py [--sizes 1000,5000] [--d 2048]
                                              [--block-size 1024] [--workers 2]
                                              [--max-dense 5000] [--landmarks 1000]
    python benchmarks/bench_pipeline_scale.py --sizes 1000,5000,20000   # the issue's target
    python benchmarks/bench_pipeline_scale.py --grid-task    # also rerun the 3-D task (6 min)
    python benchmarks/bench_pipeline_scale.py --distances landmarks --sizes 10000,20000 \
        --reference 20000                  # the 'landmarks' mode, exact stress at 20,000
    python benchmarks/bench_pipeline_scale.py --distances landmarks --sizes 100000
                                           # the issue's goal: N = 10^5 (a quiet box)

For each N, in a fresh subprocess (so that each driver's peak memory is its own) with a
fresh local Dask cluster of ``--workers`` worker processes (1 thread each):

1. ``write``: N synthetic ``d``-long vectors (texture-like: positive, correlated; made a
   chunk at a time, never all in memory) written into a new store as ``features/cnn`` of
   N one-tile images, with the records :func:`microscale.pipeline.run_features` leaves
   (``d = 2048`` stands for a sketch: 20,000 full 305,888-long vectors would be 24 GB);
2. ``image features``: :func:`microscale.pipeline.image_features` on the cluster;
3. ``distances``: :func:`microscale.pipeline.run_distances` on the cluster;
4. ``embed``: :func:`microscale.pipeline.embed` at D* = 3 when N <= ``--max-dense``;
   above it, landmark MDS with ``--landmarks`` landmarks -- through ``embed``'s
   ``landmarks=`` / ``max_dense=`` options when this version of the pipeline has them,
   otherwise by reading the ``(N, m)`` landmark columns of the stored matrix block by
   block and calling :func:`microscale.landmark.landmark_mds` here (the output says which).

With ``--distances landmarks`` stages 3-4 are the ``"landmarks"`` mode instead, which
never builds the (N, N) matrix: ``landmarks`` (:func:`microscale.stages.landmarks.
run_landmark_distances`: the landmark choice and the (N, m) distances), ``neighbors``
(:func:`microscale.stages.knn.run_neighbors`: the exact ``k`` nearest neighbours,
streamed), ``embed`` (landmark MDS from the stored columns and the stress estimated
from ``--stress-sample`` images, with its 95 % interval) and ``knn kept`` (the k-NN
preservation of the map, as the map reports it). With ``--reference N0`` the sizes up to
``N0`` also get the exact stress of the same embedding over all ``N^2 / 2`` pairs,
computed block by block from the vectors in memory with the same kernel (stored
nowhere), beside the estimate and its interval.

Printed: seconds per stage; peak RSS of the driver and of the busiest worker during each
stage (sampled every 20 ms with psutil; "+" is the increase over the process's RSS before
the stage); bytes on disk of every array. Ratios are against the smallest N, beside the
ratio of the work (N for the rows, N^2 for the pairs). The worker's peak should stay flat
(it is bounded by the block size: ``2 b d 4 + 2 b^2 8`` bytes plus the kernel's scratch),
while the dense embedding's driver memory grows as N^2 (it holds the matrix).

Finally the paper's full 3-D task (1000 images of 256x256, features to MDS) as measured
by ``benchmarks/bench_grid_task.py``; ``--grid-task`` reruns it here (about 6 minutes on
a 2-core CPU).

The default sizes take 1-4 minutes on a 2-core CPU (depending on its load); N = 20,000
adds about 6 minutes and 3.4 GB of disk (the distance matrix). Timings on a shared machine
are noisy.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from microscale.testing.peaks import print_machine, print_stages

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

# The figure printed from bench_grid_task.py: measured on this project's 2-core CPU box.
GRID_TASK_RECORD = {
    "n": 1000,
    "size": 256,
    "seconds": 355.0,
    "paper_seconds": 30 * 60,
    "source": "benchmarks/bench_grid_task.py on the 2-core x86_64 CPU box, no GPU (project notes)",
}


class TextureRows:
    """(n, d) texture-like float32 rows made on demand, chunk by chunk: ``X[a:b]``.

    Like ``bench_distances.texture_like`` (positive, 8 shared "texture modes" on a
    log-normal base), each row a function of the seed and its index only.
    """

    def __init__(self, n: int, d: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.shape = (n, d)
        self.seed = seed
        self.base = np.exp(rng.standard_normal(d)).astype(np.float32)
        self.modes = rng.standard_normal((8, d)).astype(np.float32)

    def __getitem__(self, rows: slice) -> np.ndarray:
        a, b, _ = rows.indices(self.shape[0])
        out = np.empty((b - a, self.shape[1]), np.float32)
        for s in range(a, b, 256):
            e = min(b, s + 256)
            rng = np.random.default_rng([self.seed, s])
            mix = rng.standard_normal((e - s, 8)).astype(np.float32) / np.sqrt(8)
            block = 1.0 + 0.3 * (mix @ self.modes)
            block += 0.1 * rng.standard_normal(block.shape, dtype=np.float32)
            np.multiply(np.abs(block), self.base, out=out[s - a : e - a])
        return out


class PeakRSS:
    """Peak resident memory of some processes, sampled by a thread, per named stage."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.stages: dict[str, dict[str, tuple[int, int]]] = {}

    def _rss(self) -> dict[str, int]:
        out = {}
        for name, p in self.procs.items():
            try:
                out[name] = p.memory_info().rss
            except Exception:  # a worker that went away
                out[name] = 0
        return out

    @contextmanager
    def stage(self, name: str):
        before = self._rss()
        peak = dict(before)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for k, v in self._rss().items():
                    peak[k] = max(peak[k], v)
                stop.wait(self.interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            for k, v in self._rss().items():
                peak[k] = max(peak[k], v)
            self.stages[name] = {k: (peak[k], peak[k] - before[k]) for k in peak}


def arrays_on_disk(root: Path) -> dict[str, int]:
    """Bytes on disk (allocated) of every Zarr array under ``root``."""
    out = {}
    for meta in sorted(Path(root).rglob("zarr.json")):
        try:
            node = json.loads(meta.read_text())
        except ValueError:
            continue
        if node.get("node_type") != "array":
            continue
        folder = meta.parent
        size = sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())
        out[str(folder.relative_to(root / "store.zarr"))] = size
    return out


def landmark_embedding(root: Path, *, n_components: int, m: int, block: int) -> np.ndarray:
    """Landmark MDS from the stored matrix: read its (N, m) landmark columns a block of rows
    at a time (memory ``block * N * 8`` bytes for the block, ``N * m * 8`` for the columns)."""
    from microscale import store as st
    from microscale.landmark import choose_landmarks, landmark_mds

    s = st.open_store(root, mode="r")
    n = st.array_shape(s, "distances/cnn")[0]
    idx = choose_landmarks(n, m, random_state=0)
    cols = np.empty((n, m))
    for a in range(0, n, block):
        cols[a : a + block] = st.read_rows(s, "distances/cnn", a, min(n, a + block))[:, idx]
    return landmark_mds(cols[idx], cols, n_components, landmarks=idx, random_state=0)


def _warm() -> None:
    import microscale.distance
    import microscale.landmark
    import microscale.metric_mds
    import microscale.pipeline  # noqa: F401


def exact_stress(root: Path, X: np.ndarray, *, band: int = 2048) -> float:
    """Kruskal stress-1 of ``X`` over every pair, the distances made band by band from the
    stored image features (held in memory) with the pipeline's kernel; stored nowhere."""
    from microscale import store as st
    from microscale.distance import block_sq_distances, row_sq_norms
    from microscale.metric_mds import stress_from_rows

    F = st.read_rows(st.open_store(root, mode="r"), "image_features/cnn")
    center = F.mean(axis=0, dtype=np.float64)
    norms = row_sq_norms(F, center=center, device="cpu")

    def rows(a: int, b: int) -> np.ndarray:
        d2 = block_sq_distances(
            F[a:b], F, center=center, x_sq_norms=norms[a:b], y_sq_norms=norms, device="cpu"
        )
        out = np.sqrt(d2, out=d2)
        out[np.arange(b - a), np.arange(a, b)] = 0.0
        return out

    return stress_from_rows(rows, X, batch_size=band)


def landmarks_mode(root: Path, args: argparse.Namespace, client, timed, result: dict) -> None:
    """The 'landmarks' distance mode's stages, timed into ``result``."""
    from microscale.neighbors import knn_preservation, stored_neighbors
    from microscale.stages.embed import embed
    from microscale.stages.knn import run_neighbors
    from microscale.stages.landmarks import run_landmark_distances

    b, n = args.block_size, args.one
    timed("landmarks", lambda: run_landmark_distances(
        root, client=client, block_size=b, n_landmarks=args.landmarks))  # fmt: skip
    timed("neighbors", lambda: run_neighbors(root, client=client, block_size=b, k=args.k))
    out = timed("embed", lambda: embed(
        root, n_components=[3], init_from_previous=False, distances="landmarks",
        stress_sample=args.stress_sample))  # fmt: skip
    X = out["embeddings"][3]
    idx, _ = stored_neighbors(root, k=args.k)
    kept = timed("knn kept", lambda: knn_preservation(idx, X))
    lo, hi = out["stress_interval"][3]
    result["stress"] = [out["stress"][3], lo, hi, out["stress_pairs"]]
    result["knn_kept"] = kept
    result["embed"] = (
        f"landmarks mode, m={out['n_landmarks']}: stress {out['stress'][3]:.4f} "
        f"[{lo:.4f}, {hi:.4f}] from {out['stress_pairs']:,} pairs; k-NN kept {kept:.3f}"
    )
    if args.reference and n <= args.reference:
        t = time.perf_counter()
        exact = exact_stress(root, X)
        result["exact_stress"] = exact
        result["reference_s"] = time.perf_counter() - t
        result["embed"] += (f"; exact over all {n * (n - 1) // 2:,} pairs {exact:.4f} "
                            f"({'inside' if lo <= exact <= hi else 'OUTSIDE'} the interval, "
                            f"{result['reference_s']:.0f} s)")  # fmt: skip


def one_size(args: argparse.Namespace) -> dict:
    """Run the stages at one N (in this process) and return the measurements."""
    import resource

    import dask
    import distributed
    from bench_distances import synthetic_store

    from microscale import pipeline as pl
    from microscale.cluster import ThreadLimits

    n, d, b = args.one, args.d, args.block_size
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_scale_{n}_", dir=args.store_dir))
    root = tmp / "s"
    inner = str(max(1, (os.cpu_count() or 1) // args.workers))  # microscale.cluster's rule
    env = {v: inner for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    spawn = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    spawn.update(env)  # (Dask's default sets 1 thread before the worker starts)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", env=env, memory_limit=None,
        )  # fmt: skip
    client = distributed.Client(cluster)
    client.register_plugin(ThreadLimits(int(inner), os.getpid()))  # as microscale.cluster does
    result: dict = {"n": n, "d": d, "block": b, "times": {}, "notes": []}
    try:
        # import what the stages import first, so that the RSS increases are the data's
        client.run(_warm)
        _warm()
        pids = {"driver": os.getpid()}
        for i, (_addr, pid) in enumerate(sorted(client.run(os.getpid).items())):
            pids[f"worker{i}"] = pid
        rss = PeakRSS(pids)
        X = TextureRows(n, d, seed=0)

        def timed(stage: str, fn) -> object:
            with rss.stage(stage):
                t = time.perf_counter()
                out = fn()
                result["times"][stage] = time.perf_counter() - t
            return out

        timed("write", lambda: synthetic_store(root, X, features_chunk=min(1024, b)))
        timed("image features", lambda: pl.image_features(root, client=client))
        if args.distances == "landmarks":
            landmarks_mode(root, args, client, timed, result)
        else:
            timed("distances", lambda: pl.run_distances(root, client=client, block_size=b))
        params = inspect.signature(pl.embed).parameters
        if args.distances == "landmarks":
            pass
        elif n <= args.max_dense:
            out = timed("embed", lambda: pl.embed(root, n_components=[3], init_from_previous=False))
            result["embed"] = f"dense SMACOF (stress {out['stress'][3]:.4f})"
        elif "landmarks" in params:
            kw = {"landmarks": args.landmarks}
            if "max_dense" in params:
                kw["max_dense"] = args.max_dense
            out = timed(
                "embed", lambda: pl.embed(root, n_components=[3], init_from_previous=False, **kw)
            )
            result["embed"] = (
                f"pipeline.embed(landmarks={args.landmarks}), stress {out['stress'][3]:.4f}"
            )
        else:
            timed(
                "embed",
                lambda: landmark_embedding(root, n_components=3, m=args.landmarks, block=b),
            )
            result["embed"] = (
                f"landmark MDS, m={args.landmarks}, called here (this pipeline.embed has no "
                "landmarks= option)"
            )
        result["rss"] = rss.stages
        result["disk"] = arrays_on_disk(root)
        result["driver_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["worker_maxrss"] = client.run(
            lambda: (
                __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss
                * 1024
            )
        )
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def gb(x: float) -> str:
    """Bytes as GB (or MB below 0.1 GB)."""
    return f"{x / 1e9:.2f}G" if x >= 1e8 else f"{x / 1e6:.0f}M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="values of N (1000,5000)")
    parser.add_argument("--d", type=int, default=2048, help="vector length (2048: a sketch)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (2)")
    parser.add_argument("--max-dense", type=int, default=5000, help="largest N for dense MDS")
    parser.add_argument("--landmarks", type=int, default=1000, help="landmarks above it")
    parser.add_argument("--store-dir", default=None, help="where to put the temporary stores")
    parser.add_argument("--grid-task", action="store_true", help="rerun bench_grid_task.py")
    parser.add_argument(
        "--distances",
        choices=["full", "landmarks"],
        default="full",
        help="the distance mode (default full: the N x N matrix)",
    )
    parser.add_argument("--k", type=int, default=5, help="neighbours (landmarks mode)")
    parser.add_argument(
        "--stress-sample",
        type=int,
        default=2000,
        help="images of the stress estimate (landmarks mode)",
    )
    parser.add_argument(
        "--reference",
        type=int,
        default=0,
        help="exact stress for the sizes up to this N (landmarks mode)",
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one_size(args)), flush=True)
        return
    print_machine()

    sizes = [int(v) for v in args.sizes.split(",")]
    print(f"# pipeline stages ({args.distances} distances) at N = {sizes}, d = {args.d}, "
          f"block {args.block_size}, "
          f"{args.workers} Dask worker processes x 1 thread; {platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--d", str(args.d),
               "--block-size", str(args.block_size), "--workers", str(args.workers),
               "--max-dense", str(args.max_dense), "--landmarks", str(args.landmarks),
               "--distances", args.distances, "--k", str(args.k),
               "--stress-sample", str(args.stress_sample),
               "--reference", str(args.reference)]  # fmt: skip
        if args.store_dir:
            cmd += ["--store-dir", args.store_dir]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"N={n}: failed\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        print(f"N={n}: {time.perf_counter() - t0:.0f} s; embed: {r['embed']}", flush=True)
        results.append(r)
    if not results:
        sys.exit(1)

    base = results[0]
    n0 = base["n"]
    stages = list(base["times"])
    print(f"\nwall time per stage, seconds (ratio to N={n0}; work ratio: N for write and image "
          "features, N^2 for distances and dense MDS)")  # fmt: skip
    print(f"{'N':>7} {'N/N0':>6} {'(N/N0)^2':>9} " + " ".join(f"{s:>20}" for s in stages))
    for r in results:
        f = r["n"] / n0
        cells = [f"{r['times'][s]:>9.1f} ({r['times'][s] / base['times'][s]:>6.1f}x)"
                 for s in stages]  # fmt: skip
        print(f"{r['n']:>7} {f:>6.0f} {f * f:>9.0f} " + " ".join(f"{c:>20}" for c in cells))
    for r in results:
        print_stages(r["times"], label=f"N={r['n']}")
    if args.distances == "full":
        rates = [r["n"] * (r["n"] - 1) / 2 / r["times"]["distances"] for r in results]
        print("\n  distances: " + ", ".join(
            f"N={r['n']}: {p:,.0f} pairs/s = {p * 2 * r['d'] / 1e9:.1f} GFLOP/s"
            for r, p in zip(results, rates, strict=True)))  # fmt: skip
    else:
        print("\n  rates (pairs through the kernel per second): " + "; ".join(
            f"N={r['n']}: landmarks {r['n'] * args.landmarks / r['times']['landmarks']:,.0f}, "
            f"neighbours {r['n'] * (r['n'] - 1) / 2 / r['times']['neighbors']:,.0f}"
            for r in results))  # fmt: skip
        total = [sum(v for k, v in r["times"].items() if k != "write") for r in results]
        print("  post-feature pipeline (image features to map), s: " + ", ".join(
            f"N={r['n']}: {t:.0f}" for r, t in zip(results, total, strict=True)))  # fmt: skip

    print("\npeak RSS during each stage, GB: driver | busiest worker (+ increase over the "
          "stage's start)")  # fmt: skip
    print(f"{'N':>7} " + " ".join(f"{s:>27}" for s in stages))
    for r in results:
        cells = []
        for s in stages:
            m = r["rss"][s]
            drv = m["driver"]
            wk = max((v for k, v in m.items() if k.startswith("worker")), key=lambda v: v[1])
            cells.append(f"{gb(drv[0])}(+{gb(drv[1])}) | {gb(wk[0])}(+{gb(wk[1])})")
        print(f"{r['n']:>7} " + " ".join(f"{c:>27}" for c in cells))
    b, d = args.block_size, args.d
    bound = 2 * b * d * 4 + 2 * b * b * 8
    dense = ", ".join(f"N={r['n']}: {gb(8 * r['n'] ** 2)}" for r in results)
    print(f"  bound per distance task (blocks + result, before kernel scratch): "
          f"2 b d 4 + 2 b^2 8 = {gb(bound)} at b={b}, d={d}; dense MDS holds N^2 8 bytes "
          f"({dense})")  # fmt: skip
    for r in results:
        w = max(r["worker_maxrss"].values())
        print(f"  N={r['n']}: lifetime max RSS driver {gb(r['driver_maxrss'])}, "
              f"worker {gb(w)} (ratio to N={n0}: driver "
              f"{r['driver_maxrss'] / base['driver_maxrss']:.2f}x, worker "
              f"{w / max(base['worker_maxrss'].values()):.2f}x)")  # fmt: skip

    print(f"\nbytes on disk per array (allocated; ratio to N={n0})")
    names = sorted({k for r in results for k in r["disk"]})
    big = [k for k in names if max(r["disk"].get(k, 0) for r in results) >= 1e6]
    print(f"{'array':<28} " + " ".join(f"{'N=' + str(r['n']):>16}" for r in results))
    for name in big + ["(the other arrays)", "total"]:
        cells = []
        for r in results:
            if name == "total":
                v, v0 = sum(r["disk"].values()), sum(base["disk"].values())
            elif name.startswith("("):
                v = sum(x for k, x in r["disk"].items() if k not in big)
                v0 = sum(x for k, x in base["disk"].items() if k not in big)
            else:
                v, v0 = r["disk"].get(name, 0), base["disk"].get(name, 0)
            cells.append(f"{gb(v)} ({v / v0:.0f}x)" if v0 else gb(v))
        print(f"{name:<28} " + " ".join(f"{c:>16}" for c in cells))

    g = GRID_TASK_RECORD
    print(f"\nthe paper's 3-D task, features to MDS, {g['n']} images of {g['size']}x{g['size']}: "
          f"{g['seconds']:.0f} s against the paper's {g['paper_seconds'] / 60:.0f} min "
          f"({g['paper_seconds'] / g['seconds']:.1f}x; the paper's 30 min are distances + MDS "
          f"alone, on a GPU) -- recorded by {g['source']}")  # fmt: skip
    if args.grid_task:
        subprocess.run([sys.executable, str(HERE / "bench_grid_task.py"), "--quick"], check=False)
    else:
        print("  (rerun with --grid-task: about 6 minutes)")


if __name__ == "__main__":
    main()
