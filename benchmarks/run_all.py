"""Run every benchmark in this folder with its default (2-core-box) sizes, one after another.

python benchmarks/run_all.py [name ...]      # e.g. texture distances pipeline_scale
python benchmarks/run_all.py --list          # the benchmarks and what each measures
python benchmarks/run_all.py --json out.json texture distances   # one JSON of all

Every run starts by measuring this machine's peaks (float32 and bfloat16 ``torch.mm`` of
up to 2048 x 2048, memory bandwidth of a 256 MB numpy copy:
:mod:`microscale.testing.peaks`) and prints them; so does each benchmark in its own
``machine:`` line, measured in its own run, beside the share of each of its stages. With
``--json`` one file holds them all: the peaks of the start, and per benchmark its output,
return code, seconds, and what it recorded (``machine``: its peaks; ``stages``: the
seconds and share of each stage), so that a figure from one box can be compared with
another's.

Every benchmark prints ratios against a baseline run side by side in the same process.
Each takes a few minutes at its defaults; their own flags give the big sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microscale.testing.peaks import RECORD_ENV, machine_line, measure_peaks

HERE = Path(__file__).parent

#: name -> what it measures (for the new ones: the defaults' time on a 2-core CPU).
BENCHMARKS = {
    "bf16_quality": "bf16 vs fp32 texture vectors on real images: k-NN kept, errors (25 min)",
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


def run_one(script: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run one benchmark; its output and what it recorded (machine peaks, stage shares)."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.json"
        env = {**os.environ, RECORD_ENV: str(record)}
        cmd = [sys.executable, str(script), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        recorded = json.loads(record.read_text()) if record.exists() else {}
    return proc, recorded


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
    peaks = measure_peaks()
    print(machine_line(peaks), flush=True)
    report: dict = {"peaks": peaks, "benchmarks": {}}
    failed = 0
    for name in names:
        print(f"\n=== {scripts[name].name} ===", flush=True)
        t = time.perf_counter()
        proc, recorded = run_one(scripts[name])
        print(proc.stdout, end="", flush=True)
        print(proc.stderr, end="", file=sys.stderr, flush=True)
        failed += proc.returncode != 0
        report["benchmarks"][name] = {
            "returncode": proc.returncode,
            "seconds": time.perf_counter() - t,
            **recorded,
            "stdout": proc.stdout,
        }
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
