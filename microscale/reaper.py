"""No process a run starts outlives it: a watchdog for kills, and SIGTERM handled like SIGINT.

A run's driver starts processes it does not control: Prefect's ephemeral API server (a
``uvicorn`` subprocess, stopped only by an ``atexit`` hook, so a SIGTERM or SIGKILL of
the driver leaves it running), Dask's worker processes (which exit on their own when the
nanny that started them dies) and their helpers. Two things make sure none survive:

- :func:`stop_on_signals`: SIGTERM, like SIGINT, raises :class:`KeyboardInterrupt` in the
  main thread, so the run unwinds as on Ctrl-C (the Dask cluster is closed, Prefect's
  server is stopped at exit) and the store is left resumable (work is recorded only after
  its data are written). If the process is still alive ``grace`` seconds after the
  signal, or at a second signal, it exits at once.
- :func:`reaped_children`: a small watchdog process (``python -m microscale.reaper``)
  that lists the driver's descendants every ``interval`` seconds. When the driver is gone
  (SIGKILL, or a hard exit) it sends SIGTERM to every descendant it saw that still runs,
  then SIGKILL after ``grace`` seconds. A process is identified by its pid *and* start
  time (:mod:`psutil`), so a reused pid is never signalled. The watchdog ignores SIGINT,
  SIGTERM and SIGHUP (a Ctrl-C reaches the whole foreground process group), and stops
  quietly when the block ends normally.

A parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``) would need code in each child
before it runs, which Prefect's and Dask's launchers do not let us add; the watchdog
needs nothing from them. A process started less than ``interval`` seconds before the
driver is killed can be missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["GRACE_S", "INTERVAL_S", "reaped_children", "stop_on_signals", "watch"]

#: Seconds between two listings of the driver's descendants.
INTERVAL_S = 0.2
#: Seconds between SIGTERM and SIGKILL of what a dead driver left behind, and between a
#: SIGTERM of the driver and its hard exit.
GRACE_S = 10.0

_STOP = b"stop\n"
_log = logging.getLogger(__name__)


def watch(parent: int, *, interval: float = INTERVAL_S, grace: float = GRACE_S) -> list[int]:
    """The watchdog's loop (run in its own process): follow ``parent``, reap after it.

    Lists the descendants of ``parent`` every ``interval`` seconds until ``parent`` is
    no longer this process's parent (it died), or a ``stop`` line arrives on stdin (the
    run ended normally: nothing is signalled). Then ends every descendant it saw that
    still runs: SIGTERM, and SIGKILL after ``grace`` seconds.

    Returns
    -------
    list of int
        The pids it signalled.
    """
    import psutil

    me = os.getpid()
    stopped = threading.Event()

    def read_stop() -> None:
        with contextlib.suppress(OSError, ValueError):
            if sys.stdin.buffer.readline() == _STOP:
                stopped.set()

    threading.Thread(target=read_stop, daemon=True).start()
    seen: dict[int, psutil.Process] = {}
    try:
        driver = psutil.Process(parent)
    except psutil.NoSuchProcess:
        return []
    ready = False
    while os.getppid() == parent and not stopped.is_set():
        try:
            children = driver.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        seen = {pid: p for pid, p in seen.items() if p.is_running()}
        seen.update((p.pid, p) for p in children if p.pid != me)
        if not ready:  # the driver waits for the first listing before it starts anything
            with contextlib.suppress(OSError):
                sys.stdout.write("ready\n")
                sys.stdout.flush()
            ready = True
        stopped.wait(interval)
    if stopped.is_set():
        return []
    alive = [p for p in seen.values() if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, left = psutil.wait_procs(alive, timeout=grace)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if alive:
        print(
            f"microscale: the run (pid {parent}) is gone; stopped {len(alive)} process(es) it "
            f"had started ({len(left)} needed SIGKILL): pids {sorted(p.pid for p in alive)}",
            file=sys.stderr,
            flush=True,
        )
    return [p.pid for p in alive]


@contextlib.contextmanager
def reaped_children(
    *, interval: float = INTERVAL_S, grace: float = GRACE_S
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the watchdog of this process for the ``with`` block (see the module docstring).

    Returns once the watchdog has listed this process's children for the first time.
    When the block ends normally, or by an ordinary exception, the watchdog is stopped
    and nothing is signalled. When it ends by :class:`KeyboardInterrupt` or
    :class:`SystemExit` (the process is on its way out) the watchdog stays, and ends
    whatever this process leaves behind once it has exited.

    Yields
    ------
    subprocess.Popen
        The watchdog process.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microscale.reaper",
            str(os.getpid()),
            repr(float(interval)),
            repr(float(grace)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    with proc.stdout:  # type: ignore[union-attr]
        if proc.stdout.readline() != b"ready\n":  # type: ignore[union-attr]
            _log.warning(
                "The watchdog of this run did not start (exit status %s): processes the run "
                "starts may outlive it if it is killed.",
                proc.poll(),
            )
    leaving = False
    try:
        yield proc
    except (KeyboardInterrupt, SystemExit):
        leaving = True
        raise
    finally:
        if not leaving:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(_STOP)  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Signals:
    """The handler of :func:`stop_on_signals`: the first signal interrupts, the next exits."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # a second signal: no more waiting
            os._exit(128 + signum)
        self.received = signum
        _log.warning(
            "%s received: stopping the run (the store stays resumable)",
            signal.Signals(signum).name,
        )
        timer = threading.Timer(self.grace, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals(*, grace: float = GRACE_S) -> Iterator[Any]:
    """SIGTERM and SIGINT raise :class:`KeyboardInterrupt` in the main thread, for the block.

    The run unwinds (context managers close the cluster; ``atexit`` hooks stop Prefect's
    server). If the process has not exited ``grace`` seconds after the signal, or at a
    second signal, it exits at once with status ``128 + signal``. Must be entered in the
    main thread.

    Yields
    ------
    object
        Its ``received`` attribute is the signal number once one arrived, else None.
    """
    handler = _Signals(grace)
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield handler
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _main(argv: list[str]) -> int:
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    parent, interval, grace = int(argv[0]), float(argv[1]), float(argv[2])
    watch(parent, interval=interval, grace=grace)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
