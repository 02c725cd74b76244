"""Texture vectors: speed and accuracy of the forward-pass variants, side by side in one process.

Variants of the same network and weights (``microscale.texture``'s model, run here by a
small loop so that the variant can be switched on; the library default stays the exact
fp32 path of ``texture_vectors``, checked equal to the baseline below):

- ``fp32``: the baseline, NCHW, float32 (= ``texture_vectors``), at ``--batch`` images;
- ``fp32 batch b``: the baseline at other batch sizes (``--batch-sizes``);
- ``channels_last``: NHWC memory format (oneDNN's preferred layout on CPU);
- ``bf16 conv``: ``torch.autocast(dtype=bfloat16)`` around the convolutions only; the
  Gram matrices are computed in float32 from the bf16 feature maps;
- ``bf16 all``: autocast around the whole forward pass, Gram matrices included;
- ``bf16 conv + channels_last``: what ``texture_vectors(precision="bfloat16")`` does
  (checked equal below), the opt-in fast path of the library;
- ``torch.compile``: inductor on the fp32 model (compile time printed apart; if it fails
  on this machine, the row says why). Its numbers equal fp32's to 1e-8, so it is left
  out of the 3-D task (a new image size would recompile).

For each: images/s, ratio to fp32 at the same batch size, achieved GFLOP/s (the
convolutions' 2 * MACs up to conv5_1; the Gram matrices add < 2 %) against this machine's
measured fp32 GEMM rate (and bf16 GEMM rate for scale); then the accuracy against the fp32
path on the paper's 3-D task at small size (``synth.grid_dataset(--grid-n, size=--grid-size)``,
default 125 images of 128x128): the max and median relative error of all pairwise
distances (computed with ``precision='float64'`` from each variant's vectors, against the
fp32 vectors' distances), and R^2 of k and A on the D* = 3 MDS embedding, fp32 beside.
It starts with the ``machine:`` line (this run's peaks, :mod:`microscale.testing.peaks`) and
prints the share of each stage of one fp32 and one bf16 pass (input, each block of
convolutions, Gram matrices, output), checked equal to the library's vectors.

    python benchmarks/bench_texture.py [--size 256] [--n 8] [--batch 8] [--repeat 3]
                                       [--batch-sizes 1,2,4] [--grid-n 5] [--grid-size 128]
                                       [--no-compile] [--device cpu]

The defaults take about 5 minutes on a 2-core CPU (the compile adds about a minute).
Timings on a shared machine are noisy: the variants are timed in round-robin rounds, one
after the other in one process, and each keeps its best round (``--repeat``), so that a
change of the machine's load hits all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from microscale import evaluate, synth
from microscale.distance import pairwise_distances
from microscale.metric_mds import mds
from microscale.testing.peaks import print_machine, print_stages
from microscale.texture import (
    DEFAULT_LAYERS,
    VGG19Features,
    exact_float32,
    gram_vectors,
    texture_vectors,
)
from microscale.weights import load_weights

Forward = Callable[[np.ndarray], np.ndarray]


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


def gemm_gflops(device: str, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps, best = 3, float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


@functools.cache
def _weights():
    return load_weights("vgg19-normalized")


def make_forward(
    device: str,
    *,
    batch_size: int,
    channels_last: bool = False,
    bf16: str | None = None,
    compiled: bool = False,
) -> Forward:
    """A texture-vector function of one variant: (n, H, W) in [0, 1] -> (n, d) float32."""
    dev = torch.device(device)
    model = VGG19Features(_weights(), DEFAULT_LAYERS).to(dev).eval()  # one per variant
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    body = torch.compile(model) if compiled else model
    dtype = torch.bfloat16

    def autocast(on: bool):
        if not on:
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=dtype)

    def forward(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode(), exact_float32():
            for s in range(0, len(images), batch_size):
                grey = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
                x = model.preprocess(grey.to(dev))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(bf16 is not None):
                    feats = body(x)
                    if bf16 == "all":
                        vec = gram_vectors(feats)
                if bf16 != "all":
                    vec = gram_vectors([f.float() for f in feats])
                out.append(vec.float().cpu().numpy())
        return np.concatenate(out)

    return forward


def stage_seconds(
    device: str,
    images: np.ndarray,
    *,
    batch_size: int,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
    """Seconds of each stage of one pass of the forward pass over ``images``, and its vectors.

    The stages: ``input`` (to a tensor, preprocessing, memory format), the convolutions of
    each block ``conv1`` ... ``conv5`` (with the pooling before them), ``Gram`` (the
    float32 Gram vectors), ``output`` (to numpy). The same computation as
    :func:`make_forward` (``bf16``: autocast around the convolutions), timed between the
    stages (on a GPU after a synchronisation).
    """
    dev = torch.device(device)
    model = VGG19Features(_weights(), DEFAULT_LAYERS).to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    blocks = [name.split("_")[0] for name in model.names]
    seconds = dict.fromkeys(["input", *dict.fromkeys(blocks), "Gram", "output"], 0.0)
    out = []

    def tick(stage: str, start: float) -> float:
        sync()
        now = time.perf_counter()
        seconds[stage] += now - start
        return now

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), exact_float32():
        for s in range(0, len(images), batch_size):
            start = time.perf_counter()
            grey = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
            x = model.preprocess(grey.to(dev))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            start = tick("input", start)
            feats = []
            with autocast:
                for i, (name, conv) in enumerate(zip(model.names, model.convs, strict=True)):
                    if name.endswith("_1") and name != "conv1_1":
                        x = F.avg_pool2d(x, 2)
                    x = F.relu(conv(x))
                    if name in model.layers:
                        feats.append(x)
                    if i + 1 == len(blocks) or blocks[i + 1] != blocks[i]:
                        start = tick(blocks[i], start)
            vec = gram_vectors([f.float() for f in feats])
            start = tick("Gram", start)
            out.append(vec.float().cpu().numpy())
            tick("output", start)
    return seconds, np.concatenate(out)


def distance_errors(V: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    D = pairwise_distances(V, precision="float64")
    R = pairwise_distances(ref, precision="float64")
    iu = np.triu_indices(len(R), 1)
    rel = np.abs(D[iu] - R[iu]) / R[iu]
    return float(rel.max()), float(np.median(rel))


def r2(V: np.ndarray, data) -> tuple[float, float]:
    D = pairwise_distances(V, precision="float64")
    X = mds(D, 3, random_state=0)
    return evaluate.r_squared(X, data.k), evaluate.r_squared(X, data.A)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="timing image side (256)")
    parser.add_argument("--n", type=int, default=8, help="timing images (8)")
    parser.add_argument("--batch", type=int, default=8, help="batch of the variants (8)")
    parser.add_argument("--batch-sizes", default="1,2,4", help="other fp32 batch sizes")
    parser.add_argument("--grid-n", type=int, default=5, help="3-D task values per axis (5)")
    parser.add_argument("--grid-size", type=int, default=128, help="3-D task image side (128)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, best of (3)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    machine = print_machine(device=args.device)
    dev = args.device
    images = synth.angle_dataset(args.n, A=2.0, size=args.size).images.astype(np.float32)
    images = (images - images.min()) / (images.max() - images.min())  # one [0, 1] mapping
    flop = conv_gflop(args.size)
    peak = gemm_gflops(dev)
    # the machine line's bf16 rate: sized there, since without native bf16 a 2048^2 takes minutes
    peak16 = machine["bf16_gflops"]
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    print(f"# texture vectors, {args.n} images of {args.size}x{args.size}, device {dev}")
    print(
        f"# {platform.processor() or platform.machine()} ({', '.join(isa) or 'no avx512'}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"# forward pass {flop:.1f} GFLOP/image; GEMM at the start: fp32 {peak:.0f} "
        f"GFLOP/s (2048^2), bf16 {peak16:.3g} GFLOP/s ({machine['bf16_n']}^2; "
        f"{peak16 / peak:.2f}x)"
    )

    b = args.batch
    variants: dict[str, dict] = {"fp32": {"batch_size": b}}
    for bs in (int(v) for v in args.batch_sizes.split(",") if v):
        if bs != b and bs <= args.n:
            variants[f"fp32 batch {bs}"] = {"batch_size": bs}
    variants.update({
        "channels_last": {"batch_size": b, "channels_last": True},
        "bf16 conv": {"batch_size": b, "bf16": "conv"},
        "bf16 all": {"batch_size": b, "bf16": "all"},
        "bf16 conv + channels_last": {"batch_size": b, "bf16": "conv", "channels_last": True},
    })  # fmt: skip
    if not args.no_compile:
        variants["torch.compile"] = {"batch_size": b, "compiled": True}

    # the baseline is the library's exact path
    lib = texture_vectors(images, normalize=None, device=dev, batch_size=b)
    base_fn = make_forward(dev, **variants["fp32"])
    assert np.array_equal(base_fn(images), lib), "the fp32 loop must equal texture_vectors"
    fast = texture_vectors(images, normalize=None, device=dev, batch_size=b, precision="bfloat16")
    fast_fn = make_forward(dev, **variants["bf16 conv + channels_last"])
    assert np.array_equal(fast_fn(images), fast), "precision='bfloat16' must be this variant"

    errors: dict[str, tuple[float, float]] = {}
    failed: dict[str, str] = {}
    fns: dict[str, Forward] = {}
    for name, kw in variants.items():  # build and warm up every variant
        try:
            t0 = time.perf_counter()
            fn = make_forward(dev, **kw)
            fn(images[: kw["batch_size"]])
            if kw.get("compiled"):
                print(f"# torch.compile: first call {time.perf_counter() - t0:.0f} s")
            fns[name] = fn
        except Exception as exc:  # a variant that does not run here is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:150]}"
            if os.environ.get("BENCH_VERBOSE"):
                traceback.print_exc()
    # round-robin repeats: a change of the machine's load hits every variant alike
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(args.repeat):
        peak = max(peak, gemm_gflops(dev))  # the GEMM too: its best round is the peak
        for name, fn in fns.items():
            start = time.perf_counter()
            V = fn(images)
            best[name] = min(best[name], time.perf_counter() - start)
            if name not in errors:
                errors[name] = distance_errors(V.astype(np.float64), lib.astype(np.float64))
    rates = {name: len(images) / t for name, t in best.items()}
    print(f"# fp32 GEMM, best of the rounds: {peak:.0f} GFLOP/s")
    # the share of each stage of one pass (the timed rounds above are whole passes)
    staged, V = stage_seconds(dev, images, batch_size=b)
    assert np.array_equal(V, lib), "the staged fp32 pass must equal texture_vectors"
    print_stages(staged, label=f"fp32 forward pass, {args.n} images")
    if "bf16 conv + channels_last" in fns:
        staged, V = stage_seconds(dev, images, batch_size=b, bf16=True, channels_last=True)
        assert np.array_equal(V, fast), "the staged bf16 pass must equal precision='bfloat16'"
        print_stages(staged, label=f"bf16 conv + channels_last forward pass, {args.n} images")
    print()
    base = rates["fp32"]
    print(f"speed ({args.size}x{args.size}; relative distance errors on the {args.n} images' "
          f"{args.n * (args.n - 1) // 2} pairs, against fp32)")  # fmt: skip
    print(f"{'variant':<27} {'batch':>5} {'images/s':>9} {'vs fp32':>8} {'GFLOP/s':>8} "
          f"{'of fp32 GEMM':>12} {'max rel err':>11} {'median':>9}")  # fmt: skip
    for name, kw in variants.items():
        if name in failed:
            print(f"{name:<27} {kw['batch_size']:>5}  failed here: {failed[name]}")
            continue
        r = rates[name]
        e_max, e_med = errors[name]
        print(f"{name:<27} {kw['batch_size']:>5} {r:>9.2f} {r / base:>7.2f}x {r * flop:>8.1f} "
              f"{r * flop / peak:>12.0%} {e_max:>11.1e} {e_med:>9.1e}")  # fmt: skip

    # accuracy on the 3-D task: each numerically distinct variant
    data = synth.grid_dataset(args.grid_n, size=args.grid_size)
    grid = data.images.astype(np.float32)
    n = len(grid)
    print(f"\n3-D task at {n} images of {args.grid_size}x{args.grid_size}: distances of every "
          f"pair against fp32, R^2 of k and A on the D* = 3 MDS embedding")  # fmt: skip
    from microscale.intensity import normalize_intensity

    grid = normalize_intensity(grid, method="minmax")
    ref = None
    print(f"{'variant':<27} {'max rel err':>11} {'median':>9} {'R2 k':>7} {'R2 A':>7}")
    for name in ("fp32", "bf16 conv", "bf16 all", "bf16 conv + channels_last"):
        if name not in fns:
            continue
        V = fns[name](grid).astype(np.float64)
        if ref is None:
            ref = V
        e_max, e_med = distance_errors(V, ref) if V is not ref else (0.0, 0.0)
        rk, ra = r2(V, data)
        print(f"{name:<27} {e_max:>11.1e} {e_med:>9.1e} {rk:>7.4f} {ra:>7.4f}")


if __name__ == "__main__":
    main()
