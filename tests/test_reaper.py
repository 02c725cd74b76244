"""Processes a run starts end with it: the watchdog after a kill, SIGTERM like SIGINT."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

SLEEPER = "import time; time.sleep(600)"

DRIVER = """
import subprocess, sys, time
from microscale.reaper import reaped_children

with reaped_children(interval=0.05, grace=2.0) as watchdog:
    child = subprocess.Popen([sys.executable, "-c", {nested!r}])
    time.sleep(0.5)  # the watchdog lists the child and its own child
    print(watchdog.pid, child.pid, flush=True)
    {then}
"""
NESTED = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {SLEEPER!r}])"


def _start(then):
    code = textwrap.dedent(DRIVER.format(nested=NESTED, then=then))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    watchdog, child = map(int, driver.stdout.readline().split())
    deadline = time.monotonic() + 30
    while len(psutil.Process(child).children()) < 1:  # the grandchild started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    family = [psutil.Process(p) for p in (watchdog, child)]
    family += psutil.Process(child).children(recursive=True)
    return driver, family


def _alive(procs):
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _end(proc):
    proc.kill()
    proc.wait()
    proc.stdout.close()


def _kill_all(procs):
    for p in _alive(procs):
        p.kill()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_what_a_killed_driver_started_ends_soon_after_it(sig):
    driver, family = _start(then="time.sleep(600)")
    try:
        os.kill(driver.pid, sig)
        driver.wait(timeout=30)
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not _alive(alive), [p.cmdline() for p in _alive(alive)]
    finally:
        _kill_all(family)
        _end(driver)


def test_a_block_that_ends_normally_stops_the_watchdog_and_signals_nothing():
    driver, family = _start(then="pass\nprint('done', flush=True)\ntime.sleep(600)")
    watchdog, *children = family
    try:
        assert driver.stdout.readline().strip() == "done"
        watchdog.wait(timeout=10)
        assert len(_alive(children)) == len(children)
    finally:
        _end(driver)
        _kill_all(family)


STOPPED = """
import os, signal, sys, time
from microscale.reaper import stop_on_signals

try:
    with stop_on_signals(grace=30):
        print("ready", flush=True)
        time.sleep(600)
except KeyboardInterrupt as exc:
    print("unwound", exc.args[0], flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_unwind_the_main_thread(sig):
    proc = subprocess.Popen([sys.executable, "-c", STOPPED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        assert out.strip() == f"unwound {signal.Signals(sig).name}"
        assert proc.returncode == 0
    finally:
        _end(proc)
