"""The machinery every stage shares: its units of work and how they are run.

A stage is a plan (the units of work without a completion record), a unit of work (a plain
picklable function taking the store's path: it runs on Dask workers, which open the store
themselves) and a run: :func:`run_units` submits the units to a Dask client
(``client.map``; coarse tasks) or runs them one after the other when ``client`` is None,
and reports progress through ``on_done(done, total)``: when units finish, and while they
run for units that report how far they are (``progress_within``,
:mod:`microscale.stages._unit_progress`).

Faults
------
A unit's data are written before its record, and Zarr writes each chunk by renaming a
temporary file, so whatever kills a run (the driver or a worker killed, a full disk) leaves
only whole chunks and records of written work: re-running the stage computes the rest. On
a Dask client, a killed worker's tasks are rescheduled by Dask; a unit that kills every
worker that runs it (``distributed.scheduler.allowed-failures``) is given up while the
others run on, and the stage then raises :class:`~microscale.errors.FailedUnitsError`
naming it. A cluster that has no workers for :data:`WORKER_TIMEOUT` seconds raises
:class:`~microscale.errors.NoWorkersError` rather than waiting forever. Transient read
errors of a network file system are retried by the store (:mod:`microscale.store`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microscale._validation import check_one_of
from microscale.errors import (
    DamagedStoreError,
    FailedUnitsError,
    IncompleteStageError,
    NoWorkersError,
)
from microscale.stages import _unit_progress
from microscale.stages._unit_progress import EventSender, UnitCounts, listening
from microscale.store import (
    DESCRIPTORS,
    RecordProblem,
    Store,
    open_store,
    verify_records,
)

__all__ = [
    "Batch",
    "BlockPair",
    "Progress",
    "Root",
    "StageCounts",
    "WORKER_TIMEOUT",
    "as_store",
    "check_descriptor",
    "drop_damaged",
    "locked",
    "require_intact",
    "require_done",
    "root_path",
    "row_ranges",
    "run_units",
]

_log = logging.getLogger(__name__)


#: Seconds a stage waits for a Dask cluster without workers before giving up.
WORKER_TIMEOUT = 60.0
_POLL_S = 1.0  # how often a waiting driver checks that the cluster still has workers

Progress = Callable[[int, int], None]
Root = Store | str | os.PathLike[str]


# --------------------------------------------------------------------------- work units


@dataclass(frozen=True)
class Batch:
    """A range of rows computed by one task: a feature batch or a group of images.

    Attributes
    ----------
    index : int
        Chunk index (features) or group index (image features).
    start, stop : int
        The rows ``[start, stop)`` of tiles (features) or images.
    """

    index: int
    start: int
    stop: int

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return f"{self.index:09d}"

    @property
    def extent(self) -> dict[str, list[int]]:
        """What the record says was covered."""
        return {"rows": [self.start, self.stop]}


@dataclass(frozen=True)
class BlockPair:
    """Block pair ``(i, j)``, ``i <= j``, of the distance matrix.

    Attributes
    ----------
    i, j : int
        Row and column block indices.
    rows, cols : (start, stop)
        The images of block ``i`` and block ``j``.
    """

    i: int
    j: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def key(self) -> str:
        """Name of the completion record."""
        return f"{self.i:06d}-{self.j:06d}"

    @property
    def extent(self) -> dict[str, list[int]]:
        """What the record says was covered."""
        return {"rows": list(self.rows), "cols": list(self.cols)}


@dataclass(frozen=True)
class StageCounts:
    """What a stage did.

    Attributes
    ----------
    computed : int
        Units of work computed now (batches, image groups or block pairs).
    skipped : int
        Units already done (a matching completion record), not recomputed.
    """

    computed: int
    skipped: int

    @property
    def total(self) -> int:
        """All units of the stage."""
        return self.computed + self.skipped


# --------------------------------------------------------------------------- helpers


def as_store(root: Root) -> Store:
    """The store itself, or the store opened at the path ``root``."""
    return root if isinstance(root, Store) else open_store(root)


def root_path(root: Root) -> Path:
    """The path of a store (what a unit of work is given: workers open the store)."""
    return root.root if isinstance(root, Store) else Path(root)


def check_descriptor(descriptor: str) -> str:
    """``descriptor`` if it is one of :data:`microscale.store.DESCRIPTORS`, else ValueError."""
    return check_one_of(descriptor, "descriptor", DESCRIPTORS)


def locked(store: Store, lock: bool) -> contextlib.AbstractContextManager[Any]:
    """The store's run lock when ``lock`` is true, else a context that does nothing."""
    return store.lock() if lock else contextlib.nullcontext()


def row_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``size`` rows (the last may be shorter) covering ``n``.

    Examples
    --------
    >>> row_ranges(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _apply(
    func: Callable[..., Any],
    root: Path,
    unit: Any,
    kwargs: dict[str, Any],
    report: tuple[str, str] | None = None,
) -> Any:
    if report is not None:  # (token, key): the unit's progress goes to the driver as events
        kwargs = {**kwargs, "on_progress": EventSender(*report)}
    return func(root, unit, **kwargs)


def _describe(unit: Any) -> str:
    if isinstance(unit, Batch):
        return f"{unit.key} (rows {unit.start}:{unit.stop})"
    if isinstance(unit, Sequence) and all(isinstance(p, BlockPair) for p in unit):
        return "block pairs " + ", ".join(p.key for p in unit)
    return repr(unit)


def _wait_for_workers(client: Any, timeout: float) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise NoWorkersError(_no_workers_message(client, timeout)) from None


def _no_workers_message(client: Any, timeout: float) -> str:
    return (
        f"The Dask cluster at {client.scheduler.address} has had no workers for {timeout:g} "
        "s, so the stage cannot run. Start workers for it (or check why they died: memory "
        "limit, GPU, the worker logs), or run without a client. The work done so far is kept."
    )


def run_units(
    func: Callable[..., Any],
    root: Path,
    units: Sequence[Any],
    *,
    client: Any,
    on_done: Progress | None,
    sizes: Sequence[int] | None = None,
    progress_within: bool = False,
    **kwargs: Any,
) -> None:
    """Run ``func(root, unit, **kwargs)`` for every unit, here or on a Dask client.

    ``sizes`` (default 1 each) is how much each unit advances the progress count. With
    ``progress_within``, ``func`` takes an ``on_progress`` keyword, a callable that it
    calls with how much of its unit (of its size) is done so far: ``on_done`` then moves
    while units run too, never backwards, at most every
    :data:`~microscale.stages._unit_progress.REPORT_EVERY_S` seconds (on a client the
    counts come from the workers as Dask events; see
    :mod:`microscale.stages._unit_progress`). ``on_done(total, total)`` comes only once
    every unit is done and recorded.

    On a task error the pending tasks are cancelled and the error is raised; the units
    already done keep their completion records.

    On a client, a worker that dies (killed, out of memory) is replaced by Dask and its
    tasks are rescheduled; a task that killed ``distributed.scheduler.allowed-failures +
    1`` workers is given up (``KilledWorker``). Such a unit does not stop the others: they
    run to the end and then :class:`FailedUnitsError` names the failed units. A cluster
    with no worker for :data:`WORKER_TIMEOUT` seconds, before or during the run, raises
    :class:`NoWorkersError` instead of waiting forever; a lost scheduler cancels the tasks
    at once (Dask's ``CancelledError``, with a note).
    """
    sizes = [1] * len(units) if sizes is None else list(sizes)
    counts = UnitCounts(on_done, sum(sizes), every_s=_unit_progress.REPORT_EVERY_S)
    counts.report(force=True)
    within = progress_within and on_done is not None
    if client is None:
        for index, (unit, size) in enumerate(zip(units, sizes, strict=True)):
            key = str(index)
            counts.start(key, size)
            extra = {"on_progress": counts.local(key)} if within else {}
            func(root, unit, **kwargs, **extra)
            counts.finish(key)
        return
    patience = float(WORKER_TIMEOUT)
    if units:
        _wait_for_workers(client, patience)
    with listening(client, counts) if within else contextlib.nullcontext() as token:
        # The options travel as one dict argument, not as map(**kwargs): Client.map has
        # options of its own (batch_size, key, retries ...) that would swallow ours.
        # Futures inside the dict (scattered weights) are resolved on the worker.
        run = functools.partial(
            _run_on_client, func, root, kwargs=kwargs, client=client, patience=patience,
            counts=counts, token=token,
        )  # fmt: skip
        failed = run(units, sizes)
        if failed:  # tasks queued on a worker that a poison task killed count as failures too:
            retry = [(u, z) for u, z in zip(units, sizes, strict=True) if _describe(u) in failed]
            failed = {}
            for unit, size in retry:  # so each gets a second chance, alone
                failed.update(run([unit], [size]))
    if failed:
        detail = "; ".join(f"{unit}: {why}" for unit, why in failed.items())
        raise FailedUnitsError(
            f"{len(failed)} of {len(units)} task(s) of {func.__name__} killed every worker "
            f"that ran them and were given up: {detail}. The other tasks are done and "
            "recorded; re-run the stage to retry only these, and if they fail again look for "
            "what kills the workers (memory limit, a corrupt input) in the worker logs.",
            failed=failed,
        )


def _run_on_client(
    func: Callable[..., Any],
    root: Path,
    units: Sequence[Any],
    sizes: Sequence[int],
    *,
    kwargs: dict[str, Any],
    client: Any,
    patience: float,
    counts: UnitCounts,
    token: str | None,
) -> dict[str, str]:
    """Submit ``units``, wait for all; {unit: reason} of those given up.

    Each future is released as soon as its result is read, so a worker that dies later does
    not make Dask recompute work that is already written and recorded. With a ``token``
    (:func:`~microscale.stages._unit_progress.listening`), the tasks send their progress
    as events and the loop reports it between completions.
    """
    import distributed
    from distributed.scheduler import KilledWorker

    n = len(units)
    keys = [f"{func.__name__}-{uuid.uuid4().hex}" for _ in range(n)]  # named in the dashboard
    reports = [None if token is None else (token, key) for key in keys]
    for key, size in zip(keys, sizes, strict=True):
        counts.start(key, size)
    pending = client.map(
        _apply, [func] * n, [root] * n, list(units), [kwargs] * n, reports, key=keys
    )
    unit_of = {f.key: u for f, u in zip(pending, units, strict=True)}
    poll = _POLL_S if token is None else min(_POLL_S, _unit_progress.REPORT_EVERY_S)
    failed: dict[str, str] = {}
    idle_since: float | None = None
    try:
        while pending:
            try:
                finished, rest = distributed.wait(
                    pending, timeout=poll, return_when="FIRST_COMPLETED"
                )
            except TimeoutError:  # nothing finished: are there still workers?
                counts.report()  # how far the running units are
                if client.nthreads():
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > patience:
                    raise NoWorkersError(_no_workers_message(client, patience)) from None
                continue
            idle_since = None
            pending = list(rest)
            for future in finished:
                unit = unit_of.pop(future.key)
                try:
                    future.result()
                except KilledWorker as exc:
                    counts.drop(future.key)
                    failed[_describe(unit)] = str(exc)
                    _log.error(
                        "%s %s killed every worker that ran it: %s", func.__name__, unit, exc
                    )
                    continue
                finally:
                    future.release()
                counts.finish(future.key)
            del finished
    except BaseException as exc:
        client.cancel(pending)
        if isinstance(exc, CancelledError) and client.status != "running":
            exc.add_note(
                "microscale: the Dask scheduler is gone. The units done so far keep their "
                "completion records; re-run the stage with a new client to compute the rest."
            )
        raise
    return failed


def require_done(store: Store, pending: Sequence[Any], what: str, how: str) -> None:
    """Raise IncompleteStageError when an earlier stage has ``pending`` units.

    ``what`` names the stage (``"features.cnn"``), ``how`` the call that completes it.
    """
    if pending:
        raise IncompleteStageError(
            f"{len(pending)} unit(s) of the {what} stage are not done in {store.root}; "
            f"run {how} first."
        )


def drop_damaged(
    store: Store, stage: str, *, full: bool = False, keys: Sequence[str] | None = None
) -> list[RecordProblem]:
    """Verify the records of ``stage``; drop those whose data are damaged, so they are redone.

    Every ``run_*`` function calls it before planning (driver-side, under the run lock):
    a record whose chunk files are missing, cut short or changed
    (:func:`microscale.store.verify_records`; ``full=False`` hashes only the chunks whose
    size or modification time changed), or that cannot be read, is deleted with its
    chunks (:meth:`microscale.store.Store.drop_done`) and a warning names it; the plan
    then holds exactly those units again. Records written before checksums are trusted.

    Returns
    -------
    list of RecordProblem
        The units dropped.
    """
    problems = [
        p for p in verify_records(store, stage, full=full, keys=keys) if p.kind != "unverified"
    ]
    for problem in problems:
        store.drop_done(problem.stage, problem.key)
        _log.warning("%s -- dropped: it is computed again", problem)
    return problems


def require_intact(
    store: Store, stage: str, keys: Sequence[str] | None, *, how: str, full: bool = True
) -> None:
    """Raise DamagedStoreError when records of an earlier stage that a stage reads are damaged.

    Every chunk of the records ``keys`` (None: all) of ``stage`` is hashed (the data about
    to be read; ``full=False``: only those whose size or time changed); damaged units are
    dropped first (:func:`drop_damaged`), so ``how`` (the call that recomputes them)
    computes exactly those.
    """
    problems = drop_damaged(store, stage, full=full, keys=keys)
    records = store.records(stage)
    if records and keys is not None:  # a stage with records lacks some: dropped, or never done
        problems += [RecordProblem(stage, k, "not done", {}) for k in keys if k not in records]
    if problems:
        names = "; ".join(str(p) for p in problems)
        raise DamagedStoreError(
            f"{len(problems)} unit(s) of the {stage} stage in {store.root} are damaged and "
            f"were dropped: {names}. Run {how} to recompute exactly them.",
            damaged=problems,
        )
