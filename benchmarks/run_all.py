"""Run every benchmark in this folder with its default (2-core-box) sizes, one after another.

python benchmarks/run_all.py [name ...]      # e.g. texture distances pipeline_scale
python benchmarks/run_all.py --list          # the benchmarks and what each measures
python benchmarks/run_all.py --json out.json texture distances   # one JSON of all

Every run starts by measuring this machine's peaks (float32 and bfloat16 ``torch.mm`` of
2048 x 2048, memory bandwidth of a 256 MB numpy copy), prints them and, with ``--json``,
writes them with each benchmark's output, return code and seconds into one file, so that
a figure from one box can be compared with another's.

Every benchmark prints ratios against a baseline run side by side in the same process.
Each takes a few minutes at its defaults; their own flags give the big sizes.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

#: name -> what it measures (for the new ones: the defaults' time on a 2-core CPU).
BENCHMARKS = {
    "texture": "texture vectors: fp32 vs channels_last, bf16, torch.compile, batch (5 min)",
    "distances": "distance kernel, Zarr out-of-core run_distances, cdist vs GEMM peak (3 min)",
    "pipeline_scale": "stages at N = 1000, 5000: time, peak RSS per process, disk (3 min)",
    "workers": "features and distances stages on 1, 2, 4 Dask workers (3 min)",
    "sketch": "sketched vs full texture vectors on the 3-D task",
    "landmark_mds": "landmark MDS vs full MDS",
    "mds": "MDS against scikit-learn",
    "grid_task": "the paper's 3-D task at N = 1000",
    "incremental": "growing archive: only the new work",
    "faults": "killed workers and resumed runs",
    "progress": "features with and without progress within batches (Dask events) (1 min)",
}


def machine_peaks() -> dict[str, float | str]:
    """float32 / bfloat16 GEMM GFLOP/s and memory bandwidth GB/s, best of 3 each."""
    import numpy as np
    import torch

    def best(fn, repeat: int = 3) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    n = 2048
    out: dict[str, float | str] = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    for dtype, name in ((torch.float32, "fp32_gflops"), (torch.bfloat16, "bf16_gflops")):
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        out[name] = 2 * n**3 / best(lambda a=a, b=b: a @ b) / 1e9
    src = np.ones(2**25)  # 256 MB
    dst = np.empty_like(src)
    out["memory_gbps"] = 2 * src.nbytes / best(lambda: np.copyto(dst, src)) / 1e9
    return out


def main(argv: list[str]) -> int:
    scripts = {s.stem.removeprefix("bench_"): s for s in sorted(HERE.glob("bench_*.py"))}
    if "--list" in argv:
        for name in scripts:
            print(f"{name:<16} {BENCHMARKS.get(name, '')}")
        return 0
    json_path = None
    if "--json" in argv:
        k = argv.index("--json")
        json_path, argv = Path(argv[k + 1]), argv[:k] + argv[k + 2 :]
    unknown = [n for n in argv if n not in scripts]
    if unknown:
        print(f"Unknown benchmark(s) {unknown}; choose from {sorted(scripts)}.", file=sys.stderr)
        return 2
    names = argv or list(scripts)
    peaks = machine_peaks()
    print("machine peaks: " + ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in peaks.items()
    ), flush=True)  # fmt: skip
    report: dict = {"peaks": peaks, "benchmarks": {}}
    failed = 0
    for name in names:
        print(f"\n=== {scripts[name].name} ===", flush=True)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(scripts[name])], capture_output=True, text=True)
        print(proc.stdout, end="", flush=True)
        print(proc.stderr, end="", file=sys.stderr, flush=True)
        failed += proc.returncode != 0
        report["benchmarks"][name] = {
            "returncode": proc.returncode,
            "seconds": time.perf_counter() - t,
            "stdout": proc.stdout,
        }
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
