"""Run every benchmark in this folder with its default (2-core-box) sizes, one after another.

python benchmarks/run_all.py [name ...]      # e.g. texture distances pipeline_scale
python benchmarks/run_all.py --list          # the benchmarks and what each measures

Every benchmark prints ratios against a baseline run side by side in the same process.
Each takes a few minutes at its defaults; their own flags give the big sizes.
"""

from __future__ import annotations

import subprocess
import sys
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
}


def main(argv: list[str]) -> int:
    scripts = {s.stem.removeprefix("bench_"): s for s in sorted(HERE.glob("bench_*.py"))}
    if "--list" in argv:
        for name in scripts:
            print(f"{name:<16} {BENCHMARKS.get(name, '')}")
        return 0
    unknown = [n for n in argv if n not in scripts]
    if unknown:
        print(f"Unknown benchmark(s) {unknown}; choose from {sorted(scripts)}.", file=sys.stderr)
        return 2
    names = argv or list(scripts)
    failed = 0
    for name in names:
        print(f"\n=== {scripts[name].name} ===", flush=True)
        failed += subprocess.run([sys.executable, str(scripts[name])]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
