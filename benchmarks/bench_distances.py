"""Pairwise distances: speed against the machine's GEMM peak, accuracy against exact values.

    python benchmarks/bench_distances.py [--n 2000] [--d 305888] [--block-size 1024]
                                         [--error-n 128] [--sweep 256,512,1024]
                                         [--skip-float64] [--no-store] [--read-ahead]
                                         [--workers 1] [--rounds 2] [--baseline REV]
                                         [--store-dir DIR]

Prints, in one process:

1. this machine's float32 and float64 GEMM rate (``torch.mm`` of a (b, k) by a (k, b)
   matrix, b = block size, k = min(d, 131072): the kernel's shape; the rate does not
   depend on k at these sizes);
2. ``pairwise_distances`` on n texture-like vectors (positive, strongly correlated, a few
   planted near-duplicate and duplicate pairs): pairs/s, GFLOP/s counting ``2 d`` flops per
   unique pair, fraction of the float32 GEMM peak, max relative error on sampled pairs
   against exact float64 differences; the same with ``precision='float64'``; scipy's
   ``cdist`` and a per-pair loop like the paper's, on subsets, extrapolated; and the
   pipeline's out-of-core path, :func:`microscale.stages.distances.run_distances`, on a Zarr store
   holding the same vectors (one tile per image), end to end from scratch: every block
   pair's reads, the kernel, the writes of chunk ``(i, j)`` and its transpose, the
   completion records, and the scratch buffers' first touch. Rows: ``level="image"``
   (what ``microscale run`` maps: rows from ``image_features/cnn``, the centre from the
   sums the image-feature stage keeps), ``level="tile"`` (rows from ``features/cnn``, a
   chunk of 64 rows per file; the same centre), and the image level *before*: the stage
   module of ``--baseline`` (git; default ``ooc_stages.BASELINE_REV``: tasks of one row
   block, reads through Zarr) with today's kernel. ``--read-ahead`` adds the image
   level reading a block ahead in a thread (``READ_AHEAD = 1``); ``--workers N`` (default 1)
   adds the image level on a local Dask cluster of N worker processes, started before
   the timings, as ``microscale run`` runs it. Best of ``--rounds`` (2) rounds
   interleaved with the in-memory kernel (``--no-store`` skips it; the store needs
   ``2 n d 4`` bytes of disk, 4.9 GB by default, in a temporary folder). Then each
   in-process run's stage shares (wall seconds of its best round: row reads, row norms,
   kernel, chunk writes, records, the hash of the rows read, the centre, the rest;
   ``ooc_stages.StageClock``) and the bytes it read;
3. an accuracy table of the designs on three data sets of ``--error-n`` vectors: (a) a
   cluster of near-duplicates (relative separation 1e-4), (b) a widely spread set with
   near-duplicate pairs (1e-3, 1e-4, 1e-6) and exact duplicates, (c) ordinary random data.

The defaults take about 2 minutes on a 2-core CPU (the sweep adds about 25 s per block
size) and peak at about 3 GB: ``--n 2000`` at ``d = 305,888`` is 2.4 GB of float32.
Timings on a machine shared with other work are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ooc_stages as ooc
import torch
from scipy.spatial.distance import cdist

from microscale import pipeline as pl
from microscale import store as st
from microscale.cluster import cluster_client
from microscale.distance import DEFAULT_BLOCK_SIZE, cancellation_limits, pairwise_distances
from microscale.stages import distances as dist
from microscale.testing.peaks import print_machine, print_stages

# --- helpers ---------------------------------------------------------------------------


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def gemm_rate(b: int, d: int, dtype: torch.dtype) -> float:
    """GFLOP/s of ``torch.mm`` for a (b, d) x (d, b) product."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(b, d, generator=g, dtype=dtype)
    c = torch.rand(b, d, generator=g, dtype=dtype)
    seconds = best_time(lambda: a @ c.T)
    return 2.0 * b * b * d / seconds / 1e9


def texture_like(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Positive, strongly correlated vectors, like Gram-matrix entries of ReLU features.

    x_i = base * (1 + 0.3 * mix_i . modes + 0.1 * noise_i), with a log-normal `base` shared
    by all rows and 8 shared "texture modes". Plants n // 200 near-duplicate pairs at
    relative separation 1e-4 and as many exact duplicates; returns them.
    """
    rng = np.random.default_rng(seed)
    base = np.exp(rng.standard_normal(d)).astype(np.float32)
    modes = rng.standard_normal((8, d)).astype(np.float32)
    mix = rng.standard_normal((n, 8)).astype(np.float32) / np.sqrt(8)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 64):
        e = min(n, s + 64)
        block = 1.0 + 0.3 * (mix[s:e] @ modes)
        block += 0.1 * rng.standard_normal((e - s, d), dtype=np.float32)
        np.multiply(np.abs(block), base, out=X[s:e])
    planted = []
    k = max(1, n // 200)
    rows = rng.permutation(n)[: 4 * k]
    for t in range(k):  # near-duplicates
        a, b = int(rows[2 * t]), int(rows[2 * t + 1])
        X[b] = X[a] * (1.0 + 1e-4 * rng.standard_normal(d, dtype=np.float32))
        planted.append((a, b))
    for t in range(k, 2 * k):  # exact duplicates
        a, b = int(rows[2 * t]), int(rows[2 * t + 1])
        X[b] = X[a]
        planted.append((a, b))
    return X, planted


def exact_pairs(X: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Exact distances of the listed pairs from float64 differences."""
    out = np.empty(len(ii))
    for k, (i, j) in enumerate(zip(ii, jj, strict=True)):
        diff = X[i].astype(np.float64) - X[j]
        out[k] = np.sqrt(np.einsum("i,i->", diff, diff))
    return out


def exact_matrix(X: np.ndarray) -> np.ndarray:
    X64 = X.astype(np.float64)
    D = np.zeros((len(X), len(X)))
    for i in range(len(X) - 1):
        diff = X64[i + 1 :] - X64[i]
        D[i, i + 1 :] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return D + D.T


def max_rel_error(D: np.ndarray, R: np.ndarray) -> str:
    """Max relative error over pairs with a nonzero distance; "!" if a duplicate came out
    nonzero (no relative error is defined for those)."""
    iu = np.triu_indices(len(R), 1)
    d, r = D[iu], R[iu]
    if not np.isfinite(d).all():
        return "nan"
    zero = r == 0
    err = float((np.abs(d[~zero] - r[~zero]) / r[~zero]).max())
    return f"{err:.1e}" + ("!" if (d[zero] != 0).any() else " ")


def synthetic_store(
    root: Path, X, *, features_chunk: int = 64, tile_size: int = 16, descriptor: str = "cnn"
) -> st.Store:
    """A store of ``len(X)`` one-tile images whose ``features/<descriptor>`` rows are ``X``.

    ``X`` is anything sliceable by rows (an array, or an object whose ``X[a:b]`` makes the
    rows on demand, so that ``X`` need not fit in memory). The tiles are flat (their pixels
    are never read by the later stages); the feature batches are written a chunk at a
    time with :func:`microscale.store.write_block` and marked done, exactly as
    :func:`microscale.stages.features.run_features` leaves them, so the image-feature, distance
    and embedding stages run on it unchanged.
    """
    n, d = X.shape
    store = st.create_store(
        root, tile_size=tile_size, tiles_per_chunk=4096, features_chunk=features_chunk
    )
    for a in range(0, n, 4096):
        b = min(n, a + 4096)
        st.append_tiles(
            store,
            np.full((b - a, tile_size, tile_size), 0.5, np.float32),
            image_index=np.arange(a, b),
            origins=np.zeros((b - a, 2), int),
            weights=np.ones(b - a),
        )
    ids = [f"img{i:07d}" for i in range(n)]
    st.append_images(store, image_ids=ids, paths=[f"/synthetic/{i}.png" for i in ids])
    name = f"features/{descriptor}"
    st.ensure_features_array(
        store, name, d, n_rows=n, chunk_rows=features_chunk, dtype=np.float32,
        attrs={"descriptor": descriptor, "synthetic": True},
    )  # fmt: skip
    for batch in pl.plan_feature_batches(store, descriptor=descriptor):
        rows = np.asarray(X[batch.start : batch.stop], dtype=np.float32)
        st.write_block(store, name, rows, rows=(batch.start, batch.stop))
        store.mark_done(f"features.{descriptor}", batch.key, batch.extent)
    return store


def bytes_on_disk(path: Path) -> int:
    """Bytes of the files under ``path`` (allocated size, not apparent)."""
    return sum(f.stat().st_blocks * 512 for f in Path(path).rglob("*") if f.is_file())


# --- the designs compared in the accuracy table ------------------------------------------


def naive_float32(X: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(X)
    sq = torch.einsum("ij,ij->i", t, t)
    return torch.sqrt((sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp(min=0)).double().numpy()


def torch_cdist(X: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(X)
    return torch.cdist(t, t).double().numpy()


def centred_float32(X: np.ndarray, panel: int | None) -> np.ndarray:
    """Design (1) alone: centred float32 GEMM (whole length, or panels summed in float64)."""
    c = X.mean(axis=0, dtype=np.float64)
    t = torch.from_numpy((X - c).astype(np.float32))
    sq = (t.double() ** 2).sum(1)
    if panel is None:
        cross = (t @ t.T).double()
    else:
        cross = torch.zeros(len(X), len(X), dtype=torch.float64)
        for s in range(0, X.shape[1], panel):
            cross += t[:, s : s + panel] @ t[:, s : s + panel].T
    return torch.sqrt((sq[:, None] + sq[None, :] - 2 * cross).clamp(min=0)).numpy()


def plain_float64(X: np.ndarray) -> np.ndarray:
    """Design (3) without centring: float64 GEMM of the raw rows."""
    t = torch.from_numpy(X.astype(np.float64))
    sq = (t * t).sum(1)
    return torch.sqrt((sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp(min=0)).numpy()


def error_datasets(n: int, d: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0 = np.abs(rng.standard_normal(d))
    cluster = (x0 * (1.0 + 1e-4 * rng.standard_normal((n, d)))).astype(np.float32)
    spread = np.abs(rng.standard_normal((n, d))) * rng.uniform(0.5, 2.0, (n, 1))
    for a, sep in ((0, 1e-3), (2, 1e-4), (4, 1e-6)):
        spread[a + 1] = spread[a] * (1.0 + sep * rng.standard_normal(d))
    spread = spread.astype(np.float32)
    spread[7] = spread[6]
    spread[9] = spread[8]
    ordinary = rng.standard_normal((n, d)).astype(np.float32)
    return {"(a) cluster 1e-4": cluster, "(b) spread+dups": spread, "(c) random": ordinary}


def fraction_above(X: np.ndarray, R: np.ndarray, limit: float) -> float:
    """Fraction of pairs whose cancellation factor exceeds `limit` (exact quantities)."""
    c = X.mean(axis=0, dtype=np.float64)
    sq = np.array([np.sum((x - c) ** 2) for x in X.astype(np.float64)])
    iu = np.triu_indices(len(X), 1)
    scale = (sq[:, None] + sq[None, :])[iu]
    d2 = R[iu] ** 2
    return float(np.mean(d2 * limit < scale))


# --- the out-of-core path ----------------------------------------------------------------


def out_of_core(args, X, ii, jj, exact, rows, t_mixed: float) -> float:
    """Time run_distances on a store of ``X``; add its rows to ``rows``; the best in-memory rate.

    The pipeline's path end to end, from scratch each time (no blocks, no centre): level
    "image" is what `microscale run` maps (the centre comes from the image feature sums
    kept by the image-feature stage); level "tile" reads the same rows from features/cnn
    (64-row chunks; same centre); "before" is the stage as of ``--baseline`` (its task
    order and Zarr reads, today's kernel). ``--rounds`` rounds, each followed by the
    in-memory kernel again, the order of the runs reversed every other round: the
    machine's load changes, so the ratios are taken between the best times.
    """
    n, b = len(X), args.block_size
    pairs = n * (n - 1) / 2
    baseline = ooc.load_baseline(args.baseline) if args.baseline else "no baseline asked"
    if isinstance(baseline, str):
        print(f"\n{baseline}")
        baseline = None
    tmp = Path(tempfile.mkdtemp(prefix="bench_distances_", dir=args.store_dir))
    try:
        root = tmp / "s"
        t = time.perf_counter()
        synthetic_store(root, X)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        pl.image_features(root)
        t_image = time.perf_counter() - t
        size = bytes_on_disk(root)
        rates = ooc.read_rates(root, "image_features/cnn", rows=b)
        runs = [("image", "new"), ("tile", "new")]
        runs += [("image", "before")] if baseline is not None else []
        runs += [("image", "ahead")] if args.read_ahead else []
        runs += [("image", "dask")] if args.workers else []
        best = dict.fromkeys(runs, float("inf"))
        shares: dict[tuple[str, str], tuple[list[tuple[str, float]], int]] = {}
        t_mem = t_mixed
        with contextlib.ExitStack() as stack:
            client = None
            if args.workers:  # started once, outside the timings
                client = stack.enter_context(cluster_client(
                    processes=True, n_workers=args.workers, threads_per_worker=1
                ))  # fmt: skip
            for r in range(args.rounds):
                for level, how in runs if r % 2 == 0 else runs[::-1]:
                    module = baseline if how == "before" else dist
                    lv = dist.distance_level("cnn", level)
                    st.open_store(root).clear_done(lv.stage)
                    shutil.rmtree(root / st.GROUP_NAME / lv.center, ignore_errors=True)
                    saved = module.READ_AHEAD
                    module.READ_AHEAD = 1 if how == "ahead" else saved
                    clock = ooc.StageClock(module)
                    with contextlib.ExitStack() as inner:
                        if how != "dask":
                            inner.enter_context(clock)
                        if how == "before":
                            inner.enter_context(ooc.zarr_reads())
                        t = time.perf_counter()
                        try:
                            module.run_distances(
                                root, level=level, block_size=b,
                                client=client if how == "dask" else None,
                            )  # fmt: skip
                        finally:
                            module.READ_AHEAD = saved
                        dt = time.perf_counter() - t
                    if dt < best[level, how]:
                        best[level, how] = dt
                        if how != "dask":  # (the clock does not reach the workers)
                            shares[level, how] = (clock.shares(dt), clock.read_bytes)
                t = time.perf_counter()
                pairwise_distances(X, block_size=b)
                t_mem = min(t_mem, time.perf_counter() - t)
        ours = pairs / t_mem
        rows[0] = (rows[0][0], ours, rows[0][2])  # the best in-memory time
        labels = {
            ("image", "new"): "run_distances, images (pipeline)",
            ("tile", "new"): "  tiles (rows of features/cnn)",
            ("image", "before"): f"  images, before ({args.baseline})",
            ("image", "ahead"): "  images, reading ahead in a thread",
            ("image", "dask"): f"  images, {args.workers} Dask worker process(es)",
        }
        errs = {}
        for level in ("image", "tile"):  # each matrix as its last run left it
            Ds = st.read_rows(st.open_store(root), dist.distance_level("cnn", level).matrix)
            Ds = Ds[ii, jj]
            errs[level] = float((np.abs(Ds - exact) / np.where(exact > 0, exact, 1)).max())
            assert (Ds[exact == 0] == 0).all()
        for level, how in runs:
            rows.append((labels[level, how], pairs / best[level, how], errs[level]))
        nb = -(-n // b)
        t_store = best["image", "new"]
        print(
            f"\nstore: features {size / 1e9:.2f} GB on disk written in {t_write:.1f} s "
            f"({size / 1e6 / t_write:.0f} MB/s), image features in {t_image:.1f} s; "
            f"run_distances (images): {nb * (nb + 1) // 2} block pairs of {b} in "
            f"{t_store:.1f} s (best of {args.rounds}), {t_store / t_mem:.2f}x the best "
            f"in-memory time ({t_mem:.1f} s); tiles {best['tile', 'new']:.1f} s"
        )
        print(f"a block of {b} rows of image_features/cnn into a warm buffer (best of 5, "
              "GB/s wall / per CPU second): "
              + ", ".join(f"{k} {w:.2f} / {c:.2f}" for k, (w, c) in rates.items()))  # fmt: skip
        if ("image", "before") in best:
            before = best["image", "before"]
            print(
                f"before/after (images, same process, best of {args.rounds}): "
                f"{before:.1f} s -> {t_store:.1f} s, {before / t_store:.2f}x as fast; "
                f"in-memory kernel {t_mem:.1f} s"
            )
        print("\nout-of-core stage shares (wall seconds of the best round, in this process)")
        for key, (table, read_bytes) in shares.items():
            ahead = sum(sec for name, sec in table if name.endswith("thread)"))
            print_stages({k: v for k, v in table if not k.endswith("thread)")},
                         label=labels[key].strip())  # fmt: skip
            read_s = ahead + dict(table).get("read rows", 0.0)
            gb = read_bytes / 1e9
            print(f"  read {gb:.2f} GB ({gb / (pairs / 1e6):.2f} GB per 10^6 pairs) at "
                  f"{gb / max(1e-9, read_s):.2f} GB/s"
                  + (f"; {ahead:.2f} s of it in the read-ahead thread, beside the kernel"
                     if ahead else ""))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ours


# --- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="vectors (default 2000)")
    parser.add_argument("--d", type=int, default=305_888, help="vector length (305888)")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--error-n", type=int, default=128, help="vectors per error data set")
    parser.add_argument("--sweep", type=str, default="", help="block sizes to time, e.g. 256,512")
    parser.add_argument("--skip-float64", action="store_true", help="skip precision='float64'")
    parser.add_argument("--no-store", action="store_true", help="skip the out-of-core path")
    parser.add_argument(
        "--read-ahead", action="store_true", help="also time the images reading ahead"
    )
    parser.add_argument(
        "--workers", type=int, default=1,
        help="Dask worker processes for the out-of-core row run as the pipeline does "
        "(default 1; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--store-dir", default=None, help="where to put the temporary store")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of the out-of-core timings (best of)"
    )
    parser.add_argument(
        "--baseline", default=ooc.BASELINE_REV,
        help="git revision of the distance stage to time beside today's ('' skips it; "
        f"default {ooc.BASELINE_REV}, before the out-of-core changes)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_machine()
    n, d, b = args.n, args.d, args.block_size
    pairs = n * (n - 1) / 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={n}, d={d}, block={b}")

    # 1. GEMM peaks
    k = min(d, 131_072)
    peak32 = gemm_rate(b, k, torch.float32)
    peak64 = gemm_rate(b, k, torch.float64)
    print(f"\nGEMM (torch.mm, ({b} x {k}) @ ({k} x {b}))")
    print(f"  float32  {peak32:8.1f} GFLOP/s   = {peak32 * 1e9 / (2 * d):10.0f} pairs/s at d={d}")
    print(f"  float64  {peak64:8.1f} GFLOP/s   = {peak64 * 1e9 / (2 * d):10.0f} pairs/s")

    # 2. speed on texture-like data
    t0 = time.perf_counter()
    X, planted = texture_like(n, d, args.seed)
    print(
        f"\ndata: {n} texture-like vectors, {X.nbytes / 1e9:.1f} GB, "
        f"made in {time.perf_counter() - t0:.1f} s"
    )
    rng = np.random.default_rng(args.seed + 1)
    ii, jj = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
    distinct = ii != jj
    ii = np.concatenate([ii[distinct], [p for p, _ in planted]]).astype(int)
    jj = np.concatenate([jj[distinct], [q for _, q in planted]]).astype(int)
    exact = exact_pairs(X, ii, jj)

    rows = []

    def report(name: str, rate: float, err: float | None) -> None:
        rows.append((name, rate, err))

    t = time.perf_counter()
    D = pairwise_distances(X, block_size=b)
    t_mixed = time.perf_counter() - t
    ours = pairs / t_mixed
    err = float((np.abs(D[ii, jj] - exact) / np.where(exact > 0, exact, 1)).max())
    assert (D[ii, jj][exact == 0] == 0).all()
    report("pairwise_distances (mixed)", ours, err)
    del D

    if not args.skip_float64:
        t = time.perf_counter()
        D = pairwise_distances(X, block_size=b, precision="float64")
        t64 = time.perf_counter() - t
        err = float((np.abs(D[ii, jj] - exact) / np.where(exact > 0, exact, 1)).max())
        report("pairwise_distances (float64)", pairs / t64, err)
        del D

    m = min(64, n // 2)
    t = time.perf_counter()
    cdist(X[:m], X[m : 2 * m])
    report("scipy cdist (float64)", m * m / (time.perf_counter() - t), None)

    if not args.no_store:
        ours = out_of_core(args, X, ii, jj, exact, rows, t_mixed)

    n_loop = 200
    sel_i, sel_j = ii[:n_loop], jj[:n_loop]
    tx = torch.from_numpy(X)
    t = time.perf_counter()
    for i, j in zip(sel_i, sel_j, strict=True):
        torch.linalg.vector_norm(tx[i] - tx[j])
    report("per-pair loop, torch float32", n_loop / (time.perf_counter() - t), None)
    t = time.perf_counter()
    for i, j in zip(sel_i, sel_j, strict=True):
        np.linalg.norm(X[i] - X[j])
    report("per-pair loop, numpy float32", n_loop / (time.perf_counter() - t), None)

    again = gemm_rate(b, k, torch.float32)  # the load of a shared machine changes: best of two
    print(f"\nfloat32 GEMM again after the timings: {again:.1f} GFLOP/s; the peak used below is "
          f"the better of the two")  # fmt: skip
    peak32 = max(peak32, again)
    print(f"\nspeed (unique pairs, 2 d flops each; errors on {len(ii)} sampled pairs)")
    print(
        f"  {'method':34s} {'pairs/s':>10s} {'GFLOP/s':>8s} {'% fp32':>7s} "
        f"{'ours/this':>9s} {'max rel err':>11s}"
    )
    print(
        f"  {'(this GEMM peak, float32)':34s} {peak32 * 1e9 / (2 * d):10.0f} {peak32:8.1f} "
        f"{100.0:6.1f}% {ours / (peak32 * 1e9 / (2 * d)):9.2f}"
    )
    for name, rate, err in rows:
        gflops = rate * 2 * d / 1e9
        e = "" if err is None else f"{err:.1e}"
        print(
            f"  {name:34s} {rate:10.0f} {gflops:8.1f} {100 * gflops / peak32:6.1f}% "
            f"{ours / rate:9.2f} {e:>11s}"
        )
    del tx
    if args.sweep:
        print("\nblock-size sweep (pairwise_distances, mixed)")
        for bs in (int(v) for v in args.sweep.split(",")):
            t = time.perf_counter()
            pairwise_distances(X, block_size=bs)
            dt = time.perf_counter() - t
            print(
                f"  block {bs:5d}: {pairs / dt:10.0f} pairs/s, "
                f"{100 * pairs * 2 * d / dt / 1e9 / peak32:5.1f}% of fp32 peak"
            )
    del X

    # 3. accuracy of the designs
    ne = args.error_n
    f1, f2 = cancellation_limits(d)
    designs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "naive fp32 |x|^2+|y|^2-2xy": naive_float32,
        "torch.cdist fp32": torch_cdist,
        "(1) centred fp32, one GEMM": lambda X: centred_float32(X, None),
        "(1) centred fp32, 1024-panels": lambda X: centred_float32(X, 1024),
        "(1)+(2) ours, mixed": lambda X: pairwise_distances(X, block_size=b),
        "(3) plain fp64 GEMM, uncentred": plain_float64,
        "(3) ours, precision=float64": lambda X: pairwise_distances(X, precision="float64"),
    }
    sets = error_datasets(ne, d, args.seed)
    exacts = {name: exact_matrix(Xe) for name, Xe in sets.items()}
    print(
        f"\nmax relative error, {ne} vectors of d={d} per data set "
        f"(F1={f1:.1f}, F2={f2:.1e}; !: an exact duplicate came out nonzero)"
    )
    print(f"  {'design':34s}" + "".join(f"{name:>20s}" for name in sets))
    for label, fn in designs.items():
        cells = [max_rel_error(fn(Xe), exacts[name]) for name, Xe in sets.items()]
        print(f"  {label:34s}" + "".join(f"{c:>20s}" for c in cells))
    above = [fraction_above(Xe, exacts[name], f1) for name, Xe in sets.items()]
    print(f"  {'pairs with F > F1 (recomputed)':34s}" + "".join(f"{a:19.2%} " for a in above))


if __name__ == "__main__":
    main()
