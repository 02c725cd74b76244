"""Calibrate the noise of the synthetic generator against the paper's angle-task figures.

The paper (Lubbers, Lookman & Barros 2017, Sec. IV A) does not state the settings of its
Perlin displacement noise h(r): amplitude scale, coarsest lattice, octaves, persistence,
whether h's two components are independent. They are free parameters, fixed here by what
the paper *does* state about the angle task (k = 15, N = 50, theta_i = i pi / N):

- Fig. 6: the power spectrum (PS) reconstructs the angles only for 2 <~ A <~ 3.5 and fails
  on both sides; the CNN does well for A <~ 4.5 and degrades beyond;
- Fig. 7: the D* = 2 stress of both CNN and PS grows with A;
- Fig. 4: the PS peak power falls steeply with A (~1 : 3 : 100 across the three spectra
  it shows).

The 3-D task is *not* used: it is the validation (``microscale paper --tasks grid``).

How the sweep is organised
--------------------------
The amplitude scale only rescales the A axis (``u = r + A h`` and h is linear in it), so
for each *structure* (lattice, octaves, persistence, components) the shape of the RMSE-vs-A
curve is fixed and only its position moves with the amplitude. Stage 1 (``--stage ps``,
cheap: FFTs) measures, per structure, the PS angle RMSE against the strain
``eps = A * rms|grad(h . n)|`` -- the RMS relative perturbation of the local wave vector --
and finds the window where the mean RMSE is below ``--threshold`` (0.1 rad). Its width
``eps_hi / eps_lo`` is a property of the structure; the paper's is 3.5 / 2 = 1.75. The
amplitude of each structure is then the one that puts the window on [2, 3.5] (geometric
least squares). Stage 2 (``--stage cnn``, costly: the VGG-19) runs the angle task in A units
for the best structures of stage 1, CNN and PS side by side with ``--trials`` seeds, and
scores every criterion above.

    python benchmarks/calibrate_generator.py --stage ps  [--trials 6] [--size 128]
    python benchmarks/calibrate_generator.py --stage cnn [--trials 4] [--top 5]

Results go to ``benchmarks/results/calibration_{ps,cnn}.json`` and are printed as markdown
tables (``docs/reproduction.md`` carries the ones the default was chosen from).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from microscale import evaluate, synth
from microscale.distance import pairwise_distances
from microscale.metric_mds import mds, stress
from microscale.spectrum import power_spectra

RESULTS = Path(__file__).parent / "results"
PAPER_PS_WINDOW = (2.0, 3.5)
PAPER_CNN_EDGE = 4.5
K = 15.0
N_IMAGES = 50


def structures(size: int) -> list[synth.PerlinNoise]:
    """The structures of stage 1 (amplitude 1): every lattice/octave pair whose finest
    octave keeps >= 4 pixels per cell at ``size``, persistence 0.5 and 0.7, independent
    components; plus shared components for a few."""
    out = []
    for lattice in (1, 2, 4, 8):
        for octaves in (1, 2, 3, 4, 6):
            if lattice * 2 ** (octaves - 1) > size // 4:
                continue
            for persistence in (0.5, 0.7):
                if octaves == 1 and persistence != 0.5:
                    continue
                out.append(synth.PerlinNoise(1.0, lattice, octaves, 2, persistence))
    for lattice, octaves in ((1, 4), (2, 3), (4, 3)):
        out.append(synth.PerlinNoise(1.0, lattice, octaves, 2, 0.5, "shared"))
    return out


def label(noise: synth.PerlinNoise) -> str:
    tag = "" if noise.components == "independent" else " shared"
    return f"L={noise.base_lattice} O={noise.octaves} p={noise.persistence:g}{tag}"


def gradient_rms(noise: synth.PerlinNoise) -> float:
    """RMS of |grad (h . n)| per unit of A (:func:`microscale.synth.displacement_strain`)."""
    return synth.displacement_strain(noise, size=256, seeds=16)


def angle_trial(
    noise: synth.PerlinNoise,
    A: float,
    *,
    seed: int,
    size: int,
    methods: tuple[str, ...],
    precision: str = "float32",
) -> dict[str, tuple[float, float, float]]:
    """One angle-task trial: method -> (RMSE, D* = 2 stress, mean PS peak power)."""
    data = synth.angle_dataset(N_IMAGES, A=A, k=K, size=size, seed=seed, noise=noise)
    out = {}
    for method in methods:
        if method == "ps":
            feats = power_spectra(data.images)
            f = feats.copy()
            f[:, 0] = 0.0
            peak = float(np.mean(f.max(axis=1)))
        else:
            from microscale.texture import texture_vectors

            feats = texture_vectors(data.images, precision=precision, batch_size=10)
            peak = float("nan")
        D = pairwise_distances(feats)
        X = mds(D, 2, random_state=seed)
        out[method] = (evaluate.angle_rmse(X, data.theta), stress(D, X), peak)
    return out


def window(
    x: np.ndarray, rmse: np.ndarray, threshold: float, *, log_x: bool
) -> tuple[float, float]:
    """:func:`microscale.evaluate.good_window`, interpolating in log x when ``log_x``."""
    if not log_x:
        return evaluate.good_window(x, rmse, threshold=threshold)
    lo, hi = evaluate.good_window(np.log(x), rmse, threshold=threshold)
    return math.exp(lo), math.exp(hi)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (scipy)."""
    return float(spearmanr(x, y).statistic)


def parse_structure(spec: str) -> synth.PerlinNoise:
    """``L:O:p`` or ``L:O:p:shared`` (lattice, octaves, persistence) at amplitude 1."""
    parts = spec.split(":")
    components = parts[3] if len(parts) > 3 else "independent"
    return synth.PerlinNoise(1.0, int(parts[0]), int(parts[1]), 2, float(parts[2]), components)


def stage_ps(args: argparse.Namespace) -> list[dict]:
    eps_grid = np.geomspace(args.eps_min, args.eps_max, args.n_eps)
    rows = []
    todo = [parse_structure(s) for s in args.structures] if args.structures else None
    for noise in todo or structures(args.size):
        t0 = time.perf_counter()
        g = gradient_rms(noise)
        rm = np.zeros((len(eps_grid), args.trials))
        st = np.zeros_like(rm)
        pk = np.zeros_like(rm)
        for e_i, eps in enumerate(eps_grid):
            for t in range(args.trials):
                r = angle_trial(noise, eps / g, seed=t, size=args.size, methods=("ps",))["ps"]
                rm[e_i, t], st[e_i, t], pk[e_i, t] = r
        mean = rm.mean(axis=1)
        lo, hi = window(eps_grid, mean, args.threshold, log_x=True)
        ratio = hi / lo if math.isfinite(hi) and lo > 0 else float("nan")
        amp = math.sqrt(lo * hi / math.prod(PAPER_PS_WINDOW)) / g if ratio == ratio else None
        row = {
            "structure": label(noise),
            "noise": noise.as_dict(),
            "gradient_rms_per_amplitude": g,
            "eps": eps_grid.tolist(),
            "rmse_mean": mean.tolist(),
            "rmse_std": rm.std(axis=1).tolist(),
            "stress_mean": st.mean(axis=1).tolist(),
            "peak_mean": pk.mean(axis=1).tolist(),
            "eps_lo": lo,
            "eps_hi": hi,
            "window_ratio": ratio,
            "amplitude_for_paper_window": amp,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"| {row['structure']:<22} | {g:8.3f} | {lo:7.3f} | {hi:7.3f} | {ratio:6.2f} "
            f"| {amp if amp else float('nan'):8.4f} | {row['seconds']:5.1f} |",
            flush=True,
        )
    return rows


def stage_cnn(args: argparse.Namespace) -> list[dict]:
    ps_rows = json.loads((RESULTS / "calibration_ps.json").read_text())["rows"]
    ok = [r for r in ps_rows if r["window_ratio"] == r["window_ratio"] and r["window_ratio"]]
    ok = [r for r in ok if math.isfinite(r["window_ratio"])]
    ok.sort(key=lambda r: abs(math.log(r["window_ratio"] / 1.75)))
    chosen = ok[: args.top]
    if args.structures:
        wanted = [parse_structure(s).as_dict() for s in args.structures]
        chosen = [r for r in ok if {**r["noise"], "amplitude": 1.0} in wanted]
    if args.include_by_eye:
        chosen.append(
            {
                "structure": "by-eye (release default)",
                "noise": synth.NOISE_BY_EYE.as_dict(),
                "amplitude_for_paper_window": synth.NOISE_BY_EYE.amplitude,
            }
        )
    amps = np.array(args.amplitudes)
    # A = 0 images do not depend on the noise setting: no information for the calibration
    trend = (amps > 0) & (amps <= 5)
    rows = []
    for row in chosen:
        fields = dict(row["noise"])
        fields["amplitude"] = row["amplitude_for_paper_window"] * args.amplitude_factor
        noise = synth.PerlinNoise(**fields)
        t0 = time.perf_counter()
        res = {m: np.zeros((len(amps), args.trials, 3)) for m in ("cnn", "ps")}
        for a_i, A in enumerate(amps):
            for t in range(args.trials):
                r = angle_trial(
                    noise,
                    float(A),
                    seed=1000 + t,
                    size=args.size,
                    methods=("cnn", "ps"),
                    precision=args.precision,
                )
                for m in res:
                    res[m][a_i, t] = r[m]
        out = {"structure": row["structure"], "noise": noise.as_dict(), "A": amps.tolist()}
        for m, arr in res.items():
            mean = arr[:, :, 0].mean(axis=1)
            out[m] = {
                "rmse_mean": mean.tolist(),
                "rmse_std": arr[:, :, 0].std(axis=1).tolist(),
                "stress_mean": arr[:, :, 1].mean(axis=1).tolist(),
                "stress_std": arr[:, :, 1].std(axis=1).tolist(),
                "window": window(amps, mean, args.threshold, log_x=False),
                "stress_trend": spearman_rho(amps[trend], arr[trend, :, 1].mean(axis=1)),
            }
        out["ps"]["peak_mean"] = res["ps"][:, :, 2].mean(axis=1).tolist()
        out["score"] = score(out)
        out["seconds"] = time.perf_counter() - t0
        rows.append(out)
        print_cnn_row(out)
    return rows


def score(row: dict) -> dict[str, float]:
    """Distances from the paper's statements (0 = as stated; the total is the sum)."""
    ps_lo, ps_hi = row["ps"]["window"]
    _, cnn_hi = row["cnn"]["window"]

    def log_gap(x: float, target: float) -> float:
        if not math.isfinite(x) or x <= 0:
            return 1.0
        return abs(math.log(x / target))

    parts = {
        "ps_lo": log_gap(ps_lo, PAPER_PS_WINDOW[0]),
        "ps_hi": log_gap(ps_hi, PAPER_PS_WINDOW[1]),
        "cnn_hi": log_gap(cnn_hi, PAPER_CNN_EDGE),
        "cnn_stress_trend": (1 - row["cnn"]["stress_trend"]) / 2,
        "ps_stress_trend": (1 - row["ps"]["stress_trend"]) / 2,
    }
    parts["total"] = sum(parts.values())
    return parts


def print_cnn_row(row: dict) -> None:
    A = row["A"]
    print(f"\n### {row['structure']}  amplitude {row['noise']['amplitude']:.4f}")
    print("| A | " + " | ".join(f"{a:g}" for a in A) + " |")
    print("|---" * (len(A) + 1) + "|")
    for m in ("cnn", "ps"):
        r = row[m]
        print(
            f"| {m} RMSE | "
            + " | ".join(
                f"{x:.3f}±{s:.3f}" for x, s in zip(r["rmse_mean"], r["rmse_std"], strict=True)
            )
            + " |"
        )
        print(f"| {m} stress | " + " | ".join(f"{x:.3f}" for x in r["stress_mean"]) + " |")
    peak = np.array(row["ps"]["peak_mean"])
    print("| PS peak / peak(A=1) | " + " | ".join(f"{x:.3g}" for x in peak / peak[1]) + " |")
    s = row["score"]
    print(
        f"PS window {row['ps']['window'][0]:.2f}-{row['ps']['window'][1]:.2f}, "
        f"CNN good up to {row['cnn']['window'][1]:.2f}, stress trend (Spearman) "
        f"CNN {row['cnn']['stress_trend']:+.2f} PS {row['ps']['stress_trend']:+.2f}; "
        f"score {s['total']:.3f} ({', '.join(f'{k} {v:.2f}' for k, v in s.items())}); "
        f"{row['seconds']:.0f} s",
        flush=True,
    )


def report() -> None:
    """Print the tables of docs/reproduction.md from the stored results, rescoring stage 2
    (stress trends over 0 < A <= 5: the A = 0 images do not depend on the noise)."""
    ps_rows = json.loads((RESULTS / "calibration_ps.json").read_text())["rows"]
    print("### Stage 1: PS window per structure (threshold 0.1 rad)\n")
    print(
        "| structure | rms grad / amplitude | eps_lo | eps_hi | width eps_hi/eps_lo | amplitude |"
    )
    print("|---|---|---|---|---|---|")
    for r in sorted(ps_rows, key=lambda r: (r["noise"]["components"], r["structure"])):
        amp = r["amplitude_for_paper_window"]
        print(
            f"| {r['structure']} | {r['gradient_rms_per_amplitude']:.2f} | {r['eps_lo']:.3f} "
            f"| {r['eps_hi']:.3f} | {r['window_ratio']:.2f} | "
            + (f"{amp:.4f} |" if amp else "never good |")
        )
    cnn = json.loads((RESULTS / "calibration_cnn.json").read_text())["rows"]
    print("\n### Stage 2: angle task in A units, CNN and PS (score: 0 = as the paper)\n")
    for row in cnn:
        amps = np.array(row["A"])
        trend = (amps > 0) & (amps <= 5)
        for m in ("cnn", "ps"):
            row[m]["stress_trend"] = spearman_rho(
                amps[trend], np.array(row[m]["stress_mean"])[trend]
            )
        row["score"] = score(row)
    print("| setting | amplitude | PS window | CNN good up to | stress trend CNN / PS | score |")
    print("|---|---|---|---|---|---|")
    for row in sorted(cnn, key=lambda r: r["score"]["total"]):
        lo, hi = row["ps"]["window"]
        print(
            f"| {row['structure']} | {row['noise']['amplitude']:.4f} | {lo:.2f}-{hi:.2f} "
            f"| {row['cnn']['window'][1]:.2f} | {row['cnn']['stress_trend']:+.2f} / "
            f"{row['ps']['stress_trend']:+.2f} | {row['score']['total']:.3f} |"
        )
    for row in cnn:
        print_cnn_row(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("ps", "cnn", "report"), required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=0.1, help="RMSE (rad) of 'good'")
    parser.add_argument("--eps-min", type=float, default=0.01)
    parser.add_argument("--eps-max", type=float, default=3.0)
    parser.add_argument("--n-eps", type=int, default=18)
    parser.add_argument("--top", type=int, default=5, help="structures taken to stage 2")
    parser.add_argument(
        "--amplitudes",
        type=lambda s: [float(a) for a in s.split(",")],
        default=[0, 1, 2, 3, 4, 4.5, 5, 6],
    )
    parser.add_argument("--amplitude-factor", type=float, default=1.0)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--include-by-eye", action="store_true")
    parser.add_argument(
        "--structures",
        type=lambda s: s.split(","),
        default=None,
        help="only these structures (stage cnn: instead of --top), e.g. 2:1:0.5,1:3:0.3:shared "
        "(L:O:p[:shared])",
    )
    parser.add_argument(
        "--append", action="store_true", help="add the rows to the existing results"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    print(f"# calibrate_generator --stage {args.stage} ({platform.machine()}, size {args.size})")
    RESULTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if args.stage == "report":
        report()
        return
    if args.stage == "ps":
        print("| structure | rms grad | eps_lo | eps_hi | ratio | amplitude | s |")
        print("|---|---|---|---|---|---|---|")
        rows = stage_ps(args)
    else:
        rows = stage_cnn(args)
    out = args.out or RESULTS / f"calibration_{args.stage}.json"
    if args.append and out.exists():
        rows = json.loads(out.read_text())["rows"] + rows
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out.write_text(json.dumps({"args": meta, "rows": rows}, indent=1))
    print(f"\nwrote {out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
