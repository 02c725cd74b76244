"""The machine peaks and stage shares every benchmark prints (microscale/testing/peaks.py)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from microscale.testing import peaks
from microscale.testing.runs import run_env

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"


def test_measure_peaks_returns_positive_rates_of_this_machine():
    import torch

    p = peaks.measure_peaks(device="cpu", n=256, memory_mb=4, repeat=1)
    assert p["fp32_gflops"] > 0 and p["bf16_gflops"] > 0 and p["memory_gbps"] > 0
    assert 0 < p["bf16_n"] <= 256 and 0 < p["fp32_n"] <= 256
    assert p["threads"] == torch.get_num_threads() and p["device"] == "cpu"
    line = peaks.machine_line(p)
    assert line.startswith("machine: ") and "fp32 GEMM" in line and "GB/s" in line


def test_a_slow_gemm_is_measured_at_a_small_size(monkeypatch):
    clock = iter(range(0, 10**6))  # every perf_counter call one second later: slow
    monkeypatch.setattr(peaks.time, "perf_counter", lambda: float(next(clock)))
    import torch

    n, seconds = peaks._gemm_time(
        torch.float32, torch.device("cpu"), n_max=2048, repeat=2, budget_s=10, sync=lambda: None
    )
    assert n == 256 and seconds == 1.0


def test_stage_shares_add_up_and_keep_the_order():
    seconds = {"b": 3.0, "a": 1.0}
    assert list(peaks.stage_shares(seconds).items()) == [("b", 0.75), ("a", 0.25)]
    assert peaks.stage_shares({"a": 0.0}) == {"a": 0.0}
    assert peaks.stages_line(seconds) == "stages: b 75.0% (3.00 s), a 25.0% (1.00 s); total 4.00 s"


def test_records_go_to_the_file_named_by_the_environment(monkeypatch, tmp_path, capsys):
    target = tmp_path / "record.json"
    monkeypatch.setenv(peaks.RECORD_ENV, str(target))
    peaks.print_stages({"x": 1.0, "y": 3.0}, label="first")
    peaks.print_stages({"z": 2.0}, label="second")  # merged, not replaced
    peaks.record("machine", {"fp32_gflops": 1.0})
    data = json.loads(target.read_text())
    assert data["stages"]["first"]["y"] == {"seconds": 3.0, "share": 0.75}
    assert data["stages"]["second"]["z"] == {"seconds": 2.0, "share": 1.0}
    assert data["machine"] == {"fp32_gflops": 1.0}
    assert capsys.readouterr().out.splitlines()[0].startswith("stages (first): x 25.0%")


def test_no_record_without_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(peaks.RECORD_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    peaks.record("machine", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_all_puts_a_benchmarks_records_into_its_report(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", [str(RUN_ALL.parent), *sys.path])
    spec.loader.exec_module(run_all)
    script = tmp_path / "bench_fake.py"
    script.write_text(
        "from microscale.testing.peaks import print_machine, print_stages\n"
        "print_machine(device='cpu', n=256, memory_mb=4, repeat=1)\n"
        "print_stages({'read': 1.0, 'compute': 3.0}, label='fake')\n"
    )
    monkeypatch.setenv("PYTHONPATH", run_env()["PYTHONPATH"])
    proc, recorded = run_all.run_one(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("machine: ")
    assert recorded["stages"]["fake"]["compute"]["share"] == 0.75
    assert recorded["machine"]["fp32_gflops"] > 0


def test_every_benchmark_prints_the_machine_line():
    scripts = sorted(RUN_ALL.parent.glob("bench_*.py"))
    assert len(scripts) > 10
    lacking = [s.name for s in scripts if "print_machine(" not in s.read_text()]
    assert lacking == [], f"benchmarks without the machine: line: {lacking}"
