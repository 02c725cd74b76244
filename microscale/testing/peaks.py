"""This machine's peaks and the share of each stage, printed by every benchmark.

A rate a benchmark prints (images/s, pairs/s) says little on its own: the same code runs
2x faster on a quiet box than on a loaded one, and 10x faster on another CPU. Printed
beside the peaks measured in the same run -- float32 and bfloat16 GEMM GFLOP/s and the
memory bandwidth -- and with the share of each stage of the work, a figure from one box
can be compared with another's as a fraction of what the box could do.

:func:`print_machine` measures the peaks (about 1-2 s) and prints one ``machine:`` line;
:func:`print_stages` prints one ``stages`` line of shares. Both also record what they
printed into the JSON file named by the environment variable ``MICROSCALE_BENCH_RECORD``
when it is set: ``benchmarks/run_all.py`` sets it for each benchmark it runs and puts the
records into its one JSON report.

Examples
--------
>>> stages_line({"convolutions": 3.0, "Gram": 1.0}, label="fp32")
'stages (fp32): convolutions 75.0% (3.00 s), Gram 25.0% (1.00 s); total 4.00 s'
>>> stage_shares({"a": 1.0, "b": 3.0})
{'a': 0.25, 'b': 0.75}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RECORD_ENV",
    "machine_line",
    "measure_peaks",
    "print_machine",
    "print_stages",
    "record",
    "stage_shares",
    "stages_line",
]

#: Environment variable naming the JSON file that :func:`record` adds to.
RECORD_ENV = "MICROSCALE_BENCH_RECORD"


def _best(fn: Callable[[], object], *, repeat: int, budget_s: float, sync: Callable[[], None]):
    """Best time of ``fn`` over up to ``repeat`` runs after a warm-up, within ``budget_s``."""
    fn()
    sync()
    best, spent = float("inf"), 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return best


def _gemm_time(dtype, dev, *, n_max: int, repeat: int, budget_s: float, sync) -> tuple[int, float]:
    """(n, best seconds) of an n x n ``torch.mm``: n doubles from 256 while a run is short.

    A CPU without native bfloat16 runs a bfloat16 GEMM at well under 1 GFLOP/s (one of
    2048^2 takes minutes): the size stops growing once a run of the next would take
    over 0.5 s.
    """
    import torch

    n = min(256, n_max)
    while True:
        a = torch.rand(n, n, dtype=dtype, device=dev)
        b = torch.rand(n, n, dtype=dtype, device=dev)
        a @ b
        sync()
        runs = []
        for _ in range(2):  # the shorter of two: a descheduled run must not stop the growth
            start = time.perf_counter()
            a @ b
            sync()
            runs.append(time.perf_counter() - start)
        if n >= n_max or 8 * min(runs) > 0.5:  # the next size would take over 0.5 s a run
            break
        n = min(2 * n, n_max)
    return n, _best(lambda: a @ b, repeat=repeat, budget_s=budget_s, sync=sync)


def measure_peaks(
    *,
    device: str | None = None,
    n: int = 2048,
    memory_mb: int = 256,
    repeat: int = 3,
    budget_s: float = 0.5,
) -> dict[str, Any]:
    """float32 and bfloat16 GEMM rates and the memory bandwidth of this machine.

    Parameters
    ----------
    device : str, optional
        Where the GEMMs run (``"cpu"`` or a CUDA device); by default the GPU when there
        is one, as the library does.
    n : int, optional
        Largest side of the square ``torch.mm`` (2048: 17 GFLOP); a smaller one when a
        run of it would be slow (see ``fp32_n``, ``bf16_n``).
    memory_mb : int, optional
        Size of the numpy array copied for the host memory bandwidth (read + write).
    repeat, budget_s : optional
        Each rate is the best of up to ``repeat`` timed runs after one warm-up; the runs
        of one measurement stop once they took ``budget_s`` seconds (a CPU without fast
        bfloat16 can take seconds for one bfloat16 GEMM).

    Returns
    -------
    dict
        ``cpu``, ``cpu_flags`` (the fast-arithmetic ones), ``cores``, ``torch``,
        ``threads``, ``load`` (1-minute load average), ``device``, ``gpu`` (or None),
        ``fp32_gflops``, ``bf16_gflops``, the GEMM sides they were measured at
        (``fp32_n``, ``bf16_n``), ``memory_gbps`` (host), and on a GPU
        ``device_memory_gbps``.
    """
    import torch

    from microscale.calibration import machine_key
    from microscale.device import resolve_device

    dev = resolve_device(device)
    key = machine_key(device=str(dev))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {
        "cpu": key["cpu"],
        "cpu_flags": key["cpu_flags"],
        "cores": key["cores"],
        "torch": key["torch"],
        "threads": torch.get_num_threads(),
        "load": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": dev.type,
        "gpu": key["gpu"],
    }
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        size, seconds = _gemm_time(dtype, dev, n_max=n, repeat=repeat, budget_s=budget_s, sync=sync)
        out[f"{name}_gflops"] = 2 * size**3 / seconds / 1e9
        out[f"{name}_n"] = size
    src = np.ones(max(1, memory_mb) * 2**20 // 8)
    dst = np.empty_like(src)
    seconds = _best(lambda: np.copyto(dst, src), repeat=repeat, budget_s=budget_s, sync=sync)
    out["memory_gbps"] = 2 * src.nbytes / seconds / 1e9
    if dev.type == "cuda":
        a = torch.empty(max(1, memory_mb) * 2**20 // 4, device=dev)
        b = torch.empty_like(a)
        seconds = _best(lambda: b.copy_(a), repeat=repeat, budget_s=budget_s, sync=sync)
        out["device_memory_gbps"] = 2 * a.numel() * 4 / seconds / 1e9
    return out


def machine_line(peaks: Mapping[str, Any]) -> str:
    """The one-line ``machine:`` header of a benchmark, from :func:`measure_peaks`.

    Examples
    --------
    >>> machine_line({"cpu": "Some CPU", "cpu_flags": ["avx512_bf16"], "cores": 2,
    ...               "torch": "2.14.1", "threads": 2, "load": 1.5, "device": "cpu",
    ...               "gpu": None, "fp32_gflops": 180.0, "bf16_gflops": 900.0,
    ...               "memory_gbps": 10.0})  # doctest: +NORMALIZE_WHITESPACE
    'machine: Some CPU (avx512_bf16), 2 cores, torch 2.14.1 with 2 threads, load 1.5, on
     cpu; peaks measured in this run: fp32 GEMM 180 GFLOP/s, bf16 GEMM 900 GFLOP/s (5.00x),
     memory 10.0 GB/s'
    """
    flags = ", ".join(peaks.get("cpu_flags") or []) or "no AVX"
    where = peaks["device"] if not peaks.get("gpu") else f"{peaks['device']} ({peaks['gpu']})"
    load = peaks.get("load")
    text = (
        f"machine: {peaks['cpu']} ({flags}), {peaks['cores']} cores, torch {peaks['torch']} "
        f"with {peaks['threads']} threads, load {'?' if load is None else f'{load:.1f}'}, "
        f"on {where}; peaks measured in this run: fp32 GEMM {peaks['fp32_gflops']:.0f} "
        f"GFLOP/s{_at(peaks, 'fp32')}, bf16 GEMM {_fmt(peaks['bf16_gflops'])} GFLOP/s"
        f"{_at(peaks, 'bf16')} "
        f"({_fmt_ratio(peaks['bf16_gflops'] / peaks['fp32_gflops'])}x), "
        f"memory {peaks['memory_gbps']:.1f} GB/s"
    )
    if "device_memory_gbps" in peaks:
        text += f", device memory {peaks['device_memory_gbps']:.0f} GB/s"
    return text


def _fmt(gflops: float) -> str:
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.2g}"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.1g}"


def _at(peaks: Mapping[str, Any], name: str) -> str:
    sizes = [peaks.get("fp32_n"), peaks.get("bf16_n")]
    n = peaks.get(f"{name}_n")
    if n is None or None in sizes or n == max(sizes):
        return ""
    return f" (at {n}^2)"


def print_machine(*, device: str | None = None, **options: Any) -> dict[str, Any]:
    """Measure the peaks (:func:`measure_peaks`), print the ``machine:`` line, record them."""
    peaks = measure_peaks(device=device, **options)
    print(machine_line(peaks), flush=True)
    record("machine", peaks)
    return peaks


def stage_shares(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each stage's share of the total time (all zero when the total is zero)."""
    total = float(sum(seconds.values()))
    return {name: (float(s) / total if total > 0 else 0.0) for name, s in seconds.items()}


def stages_line(seconds: Mapping[str, float], *, label: str = "") -> str:
    """``stages (label): a 61.2% (12.30 s), b ...; total ... s``, stages in the given order."""
    shares = stage_shares(seconds)
    parts = ", ".join(f"{name} {shares[name]:.1%} ({s:.2f} s)" for name, s in seconds.items())
    head = f"stages ({label})" if label else "stages"
    return f"{head}: {parts}; total {sum(seconds.values()):.2f} s"


def print_stages(seconds: Mapping[str, float], *, label: str = "") -> None:
    """Print :func:`stages_line` and record the seconds and shares under ``stages``."""
    print(stages_line(seconds, label=label), flush=True)
    entry = {name: {"seconds": float(s), "share": sh} for (name, s), sh in zip(
        seconds.items(), stage_shares(seconds).values(), strict=True)}  # fmt: skip
    record("stages", {label or "stages": entry})


def record(key: str, value: Any) -> None:
    """Add ``key: value`` to the JSON file named by ``$MICROSCALE_BENCH_RECORD``, if set.

    A dict value is merged into a dict already recorded under the same key (so that
    several :func:`print_stages` calls add up); anything else replaces it.
    """
    target = os.environ.get(RECORD_ENV)
    if not target:
        return
    path = Path(target)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if isinstance(value, dict) and isinstance(data.get(key), dict):
        data[key] = {**data[key], **value}
    else:
        data[key] = value
    path.write_text(json.dumps(data, indent=1, default=float))
