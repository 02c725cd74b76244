"""Whole ``microscale run`` commands as real processes, for fault tests and benchmarks.

:func:`start_run` starts the command on a tiny archive with options that make it quick
(power spectra only, small tiles, one worker); :func:`wait_for_children` waits until the
run has started Prefect's server and its Dask workers, so that a test can kill it mid-run;
:func:`descendants` lists what it started; :func:`lock_held_elsewhere` holds a store's run
lock in another process, as a concurrent run would; :func:`run_timed` runs a command and
reports its CPU time beside its wall time, so that "exits at once" can be checked on a
loaded machine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import microscale

__all__ = [
    "QUICK_OPTIONS",
    "Timed",
    "descendants",
    "lock_held_elsewhere",
    "run_env",
    "run_timed",
    "start_run",
    "wait_for_children",
]

#: Options of a quick run on a small archive (no VGG-19: power spectra only).
QUICK_OPTIONS: tuple[str, ...] = (
    "--descriptors",
    "ps",
    "--tile-size",
    "64",
    "--workers",
    "1",
    "--dims",
    "1,2",
    "--block-size",
    "4",
    "--device",
    "cpu",
)


def run_env() -> dict[str, str]:
    """The environment of a child ``microscale`` command: this checkout first on the path
    (the ``flows`` package lives beside ``microscale``)."""
    root = str(Path(microscale.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, path) if p)}


@dataclass(frozen=True)
class Timed:
    """A finished command with the time it took.

    Attributes
    ----------
    done : subprocess.CompletedProcess
        Its exit status and output.
    wall_s : float
        Seconds from start to exit; grows with the machine's load.
    cpu_s : float
        User + system CPU seconds it (and the children it waited for) used; nearly
        independent of the load, so it shows what the command *did* (e.g. whether it
        imported torch or started Prefect) where wall time would only show how busy the
        machine was.
    """

    done: subprocess.CompletedProcess[str]
    wall_s: float
    cpu_s: float


def run_timed(argv: Sequence[str], **run: Any) -> Timed:
    """Run ``argv`` to its end with :func:`subprocess.run` (text mode, output captured).

    The CPU time is the change in this process's ``RUSAGE_CHILDREN`` across the call, so it
    counts only this command while no other child of this process exits meanwhile (children
    still running, such as a run started by :func:`start_run`, are not counted).

    Parameters
    ----------
    argv : sequence of str
        The command.
    **run
        Passed to :func:`subprocess.run` (``env``, ``cwd``, ``timeout``, ...).

    Returns
    -------
    Timed

    Examples
    --------
    >>> import sys
    >>> timed = run_timed([sys.executable, "-c", "print(6 * 7)"])
    >>> timed.done.stdout, timed.cpu_s <= timed.wall_s + 1
    ('42\\n', True)
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, **run)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(done=done, wall_s=wall, cpu_s=cpu)


def start_run(
    archive: str | os.PathLike[str] | None,
    store: str | os.PathLike[str],
    *,
    options: Sequence[str] = QUICK_OPTIONS,
    **popen: Any,
) -> subprocess.Popen[str]:
    """Start ``python -m microscale.cli run ARCHIVE --store STORE OPTIONS`` (text mode).

    ``popen`` is passed to :class:`subprocess.Popen` (e.g. ``stdout``, ``stderr``).
    """
    args = [sys.executable, "-m", "microscale.cli", "run"]
    args += [] if archive is None else [str(archive)]
    args += ["--store", str(store), *options]
    return subprocess.Popen(args, env=run_env(), text=True, **popen)


def descendants(pid: int) -> list[Any]:
    """The live descendants of ``pid`` (:class:`psutil.Process`), [] when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_for_children(pid: int, *, timeout: float = 120.0) -> list[Any]:
    """Wait until the run ``pid`` has started Prefect's server and a Dask worker.

    Returns
    -------
    list of psutil.Process
        Its descendants then.

    Raises
    ------
    TimeoutError
        If they have not all started within ``timeout`` seconds.
    """
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = descendants(pid)
        lines = []
        for p in found:
            try:
                lines.append(" ".join(p.cmdline()))
            except psutil.Error:  # gone meanwhile
                continue
        if any("uvicorn" in c for c in lines) and any("spawn_main" in c for c in lines):
            return found
        time.sleep(0.1)
    raise TimeoutError(f"the run {pid} did not start Prefect's server and a Dask worker")


@contextlib.contextmanager
def lock_held_elsewhere(store: str | Path) -> Iterator[subprocess.Popen]:
    """Hold `store`'s run lock in a child process until the block ends; yields the child.

    The lock is held when the block starts (the child says so first) and released when it
    ends (the child is told to let go and waited for).
    """
    code = textwrap.dedent(
        f"""
        import sys
        from microscale.lock import store_lock
        with store_lock({str(store)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=run_env(),
    )  # fmt: skip
    try:
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError(f"the lock-holding process did not take the lock of {store}")
        yield holder
    finally:
        holder.communicate("\n", timeout=30)
