"""Errors before anything starts: one line on stderr, exit status 2, within seconds.

Each case runs the real ``microscale`` command in a subprocess (as a user would) and checks
its exit status, that stderr is the one line, and the time it took; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import microscale
from microscale.testing.runs import Timed, run_timed

REPO = Path(__file__).resolve().parents[1]
#: CPU seconds before the error: the issue asks for ~2 s; about 1 s here (Python, numpy and
#: the CLI), while importing torch, Prefect and distributed alone takes 5 s. CPU time, not
#: wall time, because a loaded test machine stretches the latter (5.6 s at load 14).
CPU_LIMIT_S = 2.5
#: Wall seconds, generous for a loaded machine: rules out waiting on anything.
WALL_LIMIT_S = 30.0


def _microscale(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, Timed]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    timed = run_timed(
        [sys.executable, "-m", "microscale.cli", *args], cwd=cwd, env=env, timeout=120
    )
    return timed.done, timed


def _one_line_error(done: subprocess.CompletedProcess, timed: Timed, *words: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("microscale run: error: ")
    assert "Traceback" not in done.stderr + done.stdout
    for word in words:
        assert word in lines[0]
    assert timed.cpu_s < CPU_LIMIT_S, f"{timed.cpu_s:.1f} s of CPU before the error"
    assert timed.wall_s < WALL_LIMIT_S, f"{timed.wall_s:.1f} s before the error"
    return lines[0]


def test_version(tmp_path):
    done, _ = _microscale("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"microscale {microscale.__version__}"


def test_missing_archive(tmp_path):
    done, s = _microscale("run", str(tmp_path / "nonexistent"), "--store", "S", cwd=tmp_path)
    _one_line_error(done, s, "nonexistent", "does not exist")
    assert not (tmp_path / "S").exists()


def test_store_is_a_file(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "S").write_text("not a store")
    done, s = _microscale("run", "archive", "--store", "S", cwd=tmp_path)
    _one_line_error(done, s, "store S is a file")


def test_archive_without_images(tmp_path):
    (tmp_path / "x" / "a").mkdir(parents=True)
    (tmp_path / "x" / "a" / "t.txt").write_text("hi\n")
    done, s = _microscale("run", "x/a", "--store", "s", cwd=tmp_path)
    line = _one_line_error(done, s)
    assert "no images found in x/a (1 file: 1 skipped, not an image)" in line
    assert not (tmp_path / "s").exists()


def test_bad_parameter_is_one_line(tmp_path):
    (tmp_path / "archive").mkdir()
    done, s = _microscale("run", "archive", "--dims", "0", cwd=tmp_path)
    _one_line_error(done, s, "n_components")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path, where):
    args = ["run", "nonexistent", "--store", "S"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    done, _ = _microscale(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "FileNotFoundError" in done.stderr
