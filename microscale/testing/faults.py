"""Worker faults on demand: a plugin that slows or kills Dask workers, and a small cluster.

Used by the fault tests and the fault benchmark: :class:`Sabotage` wraps a function of a
microscale module on every worker (a worker that Dask's nanny restarts gets it again), and
:func:`three_workers` starts three single-threaded worker processes with it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["Sabotage", "three_workers", "worker_processes"]


class Sabotage(WorkerPlugin):
    """Slow down (and optionally poison) ``<module>.<target>`` on each worker.

    Parameters
    ----------
    module : str
        The module whose global ``target`` the stage code looks up at call time, e.g.
        ``"microscale.stages.features"``.
    target : str
        A function taking the store first, e.g. ``"read_tiles"``.
    delay : float
        Seconds each call sleeps first.
    poison : int, optional
        The first positional argument after the store (a tile start row) for which the
        worker process SIGKILLs itself, as a segfault or an OOM kill would end it.
    log : str, optional
        A file that gets one line per call (the first argument after the store): counts the
        work done, re-runs included.
    """

    name = "microscale-sabotage"

    def __init__(
        self,
        module: str,
        target: str,
        delay: float,
        poison: int | None = None,
        log: str | None = None,
    ) -> None:
        self.module, self.target, self.delay = module, target, delay
        self.poison, self.log = poison, log

    def setup(self, worker: Any) -> None:
        """Wrap the target on ``worker`` (called by Dask)."""
        module = importlib.import_module(self.module)
        original = getattr(module, self.target)
        delay, poison, log = self.delay, self.poison, self.log

        def sabotaged(store: Any, *args: Any, **kwargs: Any) -> Any:
            if log is not None:
                with open(log, "a") as fh:
                    fh.write(f"{args[0] if args else ''}\n")
            if poison is not None and args and args[0] == poison:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(delay)
            return original(store, *args, **kwargs)

        setattr(module, self.target, sabotaged)


@contextlib.contextmanager
def worker_processes(
    plugin: Sabotage,
    *,
    n_workers: int,
    allowed_failures: int = 3,
    env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A client of ``n_workers`` single-threaded worker processes on 127.0.0.1, with
    ``plugin``.

    Nannies restart killed workers; a task that killed ``allowed_failures + 1`` workers is
    given up. ``env``: environment variables of the worker processes.
    """
    import dask
    import distributed

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}),
        distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            worker_dashboard_address=None,
            env=env or {},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(plugin)
        yield client


def three_workers(
    plugin: Sabotage, *, allowed_failures: int = 3, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """:func:`worker_processes` with three workers (the fault campaign's cluster)."""
    return worker_processes(plugin, n_workers=3, allowed_failures=allowed_failures, env=env)
