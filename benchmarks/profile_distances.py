"""Where the exact distance kernel spends its time outside the GEMM, one stage per row.

    python benchmarks/profile_distances.py [--n 2048] [--d 305888] [--block-size 1024]
                                           [--threads 1] [--wall]

Runs :func:`microscale.distance.pairwise_distances` on texture-like vectors (the data of
``bench_distances.py``) with timers wrapped around the kernel's stages: the float32 GEMM
(``torch.bmm`` of the panels), the float64 panel sums, the centring of the columns, the
row norms, the float64 and direct fallbacks (steps 2 and 3), the rest of each block
(scale, masks, mirror) and the driver (mean, square roots, copies). Prints each stage's
share and the GEMM's achieved rate against ``torch.mm``'s of the same shape.

By default it times CPU seconds of the process on one torch thread (``time.process_time``):
on a machine shared with other work a single-threaded process's CPU time is the work it
did, whatever the load, so the shares are reproducible (wall time under load is not).
``--wall`` uses wall time instead; ``--threads`` sets torch's threads (CPU time then also
counts the threads' spinning).

``--store PATH`` profiles the pipeline's out-of-core path instead, in wall seconds with
torch's default threads: a store of the same vectors at PATH (made there, with its image
features, unless it holds them already: keep it to profile again), then
``run_distances`` from scratch, today's and the ``--baseline`` commit's stage module side
by side (``ooc_stages.py``), ``--rounds`` rounds interleaved, and for each its best
round's stage shares (row reads, row norms, kernel, chunk writes, records, the hash of the
rows read, the centre, the rest) and the bytes it read.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import time
from pathlib import Path

import ooc_stages as ooc
import torch
from bench_distances import synthetic_store, texture_like

import microscale.distance as dm
from microscale import store as st
from microscale.stages import distances as dist
from microscale.stages import image_features as imf

T: dict[str, float] = collections.defaultdict(float)
CLOCK = time.process_time


def timed(name: str) -> None:
    fn = getattr(dm, name)

    def wrapper(*args, **kwargs):
        t = CLOCK()
        out = fn(*args, **kwargs)
        T[name] += CLOCK() - t
        return out

    setattr(dm, name, wrapper)


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=305_888)
    parser.add_argument("--block-size", type=int, default=dm.DEFAULT_BLOCK_SIZE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="wall time instead of CPU time")
    parser.add_argument("--store", type=Path, help="profile run_distances on a store here")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=ooc.BASELINE_REV, help="git revision ('': none)")
    parser.add_argument("--read-ahead", action="store_true", help="--store: also reading ahead")
    args = parser.parse_args()
    if args.store is not None:
        profile_store(args)
        return
    torch.set_num_threads(args.threads)
    CLOCK = time.perf_counter if args.wall else time.process_time
    n, d, b = args.n, args.d, args.block_size

    # the GEMM inside _accumulate: time torch.bmm by wrapping the torch function it calls
    bmm = torch.bmm

    def bmm_timed(*a, **k):
        t = CLOCK()
        out = bmm(*a, **k)
        T["gemm"] += CLOCK() - t
        T["gemm_flops"] += 2 * out.numel() * a[0].shape[2]
        return out

    for name in ("_accumulate", "_centre_into", "_float64_sub_block", "_direct", "_cross",
                 "_block", "_prepare"):  # fmt: skip
        timed(name)
    X, _ = texture_like(n, d)
    k = min(d, 131_072)
    a, c = torch.rand(b, k), torch.rand(b, k)
    peak = 0.0
    for _ in range(3):
        t = CLOCK()
        a @ c.T
        peak = max(peak, 2 * b * b * k / (CLOCK() - t) / 1e9)
    dm.pairwise_distances(X[: min(n, b)], block_size=b)  # warm-up
    T.clear()
    torch.bmm = bmm_timed
    try:
        t = CLOCK()
        dm.pairwise_distances(X, block_size=b)
        total = CLOCK() - t
    finally:
        torch.bmm = bmm
    pairs = n * (n - 1) / 2
    ideal = pairs * 2 * d / peak / 1e9
    unit = "wall" if args.wall else "CPU"
    print(f"n={n} d={d} block={b}, {args.threads} thread(s), {unit} seconds, torch "
          f"{torch.__version__}")  # fmt: skip
    print(f"torch.mm ({b} x {k}) @ ({k} x {b}): {peak:.0f} GFLOP/s; kernel {total:.2f} s = "
          f"{ideal / total:.1%} of that peak; GEMM flops done {T['gemm_flops'] / 1e9:.0f} GFLOP "
          f"for {pairs * 2 * d / 1e9:.0f} unique, at {T['gemm_flops'] / 1e9 / T['gemm']:.0f} "
          f"GFLOP/s")  # fmt: skip
    panel_sums = T["_accumulate"] - T["gemm"]
    rows = [
        ("float32 GEMM (torch.bmm)", T["gemm"]),
        ("float64 panel sums", panel_sums),
        ("centring the columns", T["_centre_into"]),
        ("rest of step 1", T["_cross"] - T["_accumulate"] - T["_centre_into"]),
        ("step 2 (float64 sub-blocks)", T["_float64_sub_block"]),
        ("step 3 (direct differences)", T["_direct"]),
        ("block: scale, masks, mirror",
         T["_block"] - T["_cross"] - T["_float64_sub_block"] - T["_direct"]),
        ("row norms", T["_prepare"]),
        ("driver: mean, sqrt, copies", total - T["_block"] - T["_prepare"]),
    ]  # fmt: skip
    for name, sec in rows:
        print(f"  {name:30s} {sec:8.2f} s {sec / total:7.1%}")
    print(f"  {'total':30s} {total:8.2f} s   (ideal at the mm peak {ideal:.2f} s)")


def profile_store(args: argparse.Namespace) -> None:
    """Stage shares of run_distances (today's and the baseline's) on the store at args.store."""
    n, d, b, root = args.n, args.d, args.block_size, args.store
    if not (root / st.GROUP_NAME).exists():
        synthetic_store(root, texture_like(n, d)[0])
    store = st.open_store(root)
    if imf.plan_image_groups(store, descriptor="cnn") or not st.has_array(
        store, "image_features/cnn"
    ):
        imf.image_features(root, descriptor="cnn")
    if store.n_images != n or st.array_shape(store, "features/cnn")[1] != d:
        raise SystemExit(f"{root} holds another n or d: delete it or pass its own --n/--d")
    rates = ooc.read_rates(root, "image_features/cnn")
    print("1024 rows of image_features/cnn into a warm buffer, best of 5, GB/s wall / per CPU s: "
          + ", ".join(f"{k} {w:.2f} / {c:.2f}" for k, (w, c) in rates.items()))  # fmt: skip
    modules = {"today": dist}
    if args.read_ahead:
        modules["today, reading ahead"] = dist
    baseline = ooc.load_baseline(args.baseline) if args.baseline else "no baseline asked"
    if isinstance(baseline, str):
        print(baseline)
    else:
        modules[f"before ({args.baseline})"] = baseline
    best: dict[str, tuple[float, ooc.StageClock]] = {}
    for r in range(args.rounds):
        for label, module in modules.items() if r % 2 == 0 else list(modules.items())[::-1]:
            store.clear_done("distances.cnn")
            shutil.rmtree(root / st.GROUP_NAME / "center/cnn", ignore_errors=True)
            clock = ooc.StageClock(module)
            saved, module.READ_AHEAD = module.READ_AHEAD, 1 if "reading ahead" in label else None
            try:
                with clock, ooc.zarr_reads() if module is not dist else contextlib.nullcontext():
                    t = time.perf_counter()
                    module.run_distances(root, block_size=b)
                    total = time.perf_counter() - t
            finally:
                module.READ_AHEAD = saved
            print(f"round {r}: {label} {total:.2f} s", flush=True)
            if label not in best or total < best[label][0]:
                best[label] = (total, clock)
    pairs = n * (n - 1) / 2
    print(f"\nrun_distances n={n} d={d} block={b}, wall seconds, best of {args.rounds}")
    for label, (total, clock) in best.items():
        print(f"  {label}: {total:.2f} s, {pairs / total:.0f} pairs/s, read "
              f"{clock.read_bytes / 1e9:.2f} GB")  # fmt: skip
        for name, sec in clock.shares(total):
            print(f"    {name:36s} {sec:8.2f} s {sec / total:7.1%}")
    if baseline_label := next((k for k in best if k.startswith("before")), None):
        for label, (total, _) in best.items():
            print(f"  {baseline_label} / {label}: {best[baseline_label][0] / total:.2f}x")


if __name__ == "__main__":
    main()
