"""Progress within units of work: counts that move while a unit (one Dask task) runs.

A unit of work that can tell how far it is takes an ``on_progress(n)`` keyword and calls
it with how much of itself is done so far, in the unit's own size (a feature batch: its
tiles, after each forward pass of the network).
:func:`~microscale.stages._runner.run_units` with ``progress_within=True`` gives it one:

- run here (no client): a callable that advances the stage's counts at once
  (:meth:`UnitCounts.local`);
- on a Dask worker: an :class:`EventSender`, which logs ``[token, key, n]`` on the
  scheduler under the event topic :data:`TOPIC` (``Worker.log_event``; at most one event
  per task every :data:`SEND_EVERY_S` seconds). The driver subscribes to the topic
  (:func:`listening`, ``Client.subscribe_topic``) and its handler notes the count on the
  stage's :class:`UnitCounts`; the driver's wait loop reports it (never the event loop's
  thread, so ``on_done`` always runs in the driver's own thread).

:class:`UnitCounts` reconciles these counts with the units that finish. A running unit
counts at most its size minus one (it is done only once written and recorded), a finished
unit its size; a count is never reported lower than the last one reported (a unit
restarted after its worker died counts from zero again) nor above the total, and events
that arrive after their unit finished are ignored. Progress within units is reported at
most every :data:`REPORT_EVERY_S` seconds; the end of a unit at once.

Examples
--------
>>> seen = []
>>> counts = UnitCounts(lambda done, total: seen.append(done), 10, every_s=0.0)
>>> counts.report(force=True)
>>> counts.start("a", 4); counts.start("b", 6)
>>> on_progress = counts.local("a")
>>> on_progress(2); on_progress(4)  # 4 of 4 counts 3 until "a" is recorded
>>> counts.finish("a")
>>> counts.advance("b", 6)  # an event from a worker: noted, reported by report()
>>> counts.report()
>>> counts.finish("b")
>>> seen
[0, 2, 3, 4, 9, 10]
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["REPORT_EVERY_S", "SEND_EVERY_S", "TOPIC", "EventSender", "UnitCounts", "listening"]

_log = logging.getLogger(__name__)

#: The scheduler's event topic of progress within units (one for every run: the scheduler
#: keeps the last ``distributed.admin.low-level-log-length`` events of each topic).
TOPIC = "microscale-progress"
#: Seconds between two reports of progress within units (the end of a unit: at once).
REPORT_EVERY_S = 0.5
#: Seconds between two events of one task on a worker.
SEND_EVERY_S = 0.25

Progress = Callable[[int, int], None]


class UnitCounts:
    """How much of a stage is done: the units finished, and how far the running ones are.

    Thread-safe: :meth:`advance` may be called from the Dask client's event loop while the
    driver's thread calls the others.

    Parameters
    ----------
    on_done : callable or None
        ``on_done(done, total)``, called by :meth:`report`.
    total : int
        The sum of the sizes of all units.
    every_s : float, optional
        Seconds between two reports that are not forced.
    clock : callable, optional
        Seconds as a float (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        on_done: Progress | None,
        total: int,
        *,
        every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = int(total)
        self._on_done = on_done
        self._every_s = float(every_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._size: dict[str, int] = {}  # running units
        self._within: dict[str, int] = {}  # how far each running unit is
        self._finished = 0
        self._reported = -1
        self._reported_at = -math.inf

    @property
    def count(self) -> int:
        """Units finished (by size) plus the progress of those running, at most ``total``."""
        with self._lock:
            return min(self.total, self._finished + sum(self._within.values()))

    def start(self, key: str, size: int) -> None:
        """A unit of ``size`` is submitted (or starts, here) under ``key``."""
        with self._lock:
            self._size[key] = int(size)
            self._within[key] = 0

    def advance(self, key: str, n: int) -> None:
        """The running unit ``key`` has done ``n`` of its size (late or foreign: ignored)."""
        with self._lock:
            size = self._size.get(key)
            if size is None:
                return
            self._within[key] = max(self._within[key], min(int(n), size - 1))

    def finish(self, key: str) -> None:
        """The unit ``key`` is done and recorded: count its whole size and report now."""
        with self._lock:
            self._finished += self._size.pop(key)
            del self._within[key]
        self.report(force=True)

    def drop(self, key: str) -> None:
        """Forget the unit ``key`` (given up): its progress no longer counts."""
        with self._lock:
            self._size.pop(key, None)
            self._within.pop(key, None)

    def report(self, *, force: bool = False) -> None:
        """Call ``on_done(count, total)`` if the count grew (and, unless ``force``, at most
        every ``every_s`` seconds)."""
        if self._on_done is None:
            return
        now = self._clock()
        if not force and now - self._reported_at < self._every_s:
            return
        count = self.count
        if count <= self._reported:
            return
        self._reported, self._reported_at = count, now
        self._on_done(count, self.total)

    def local(self, key: str) -> Callable[[int], None]:
        """``on_progress(n)`` for the unit ``key`` run here: advances it and reports."""

        def on_progress(n: int) -> None:
            self.advance(key, n)
            self.report()

        return on_progress


class EventSender:
    """``on_progress(n)`` of a unit on a Dask worker: an event ``[token, key, n]`` on :data:`TOPIC`.

    Made by the task itself (in the worker's task thread); outside a Dask task it does
    nothing. A failure to send is logged, never raised: a progress report must not fail
    the unit.

    Parameters
    ----------
    token : str
        The run's token (:func:`listening`).
    key : str
        The unit's key in the run.
    every_s : float, optional
        Seconds between two events (default :data:`SEND_EVERY_S`); the counts in between
        are dropped: the next event or the unit's end covers them.
    clock : callable, optional
        Seconds as a float (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        token: str,
        key: str,
        *,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from distributed import get_worker

        try:
            self._worker: Any = get_worker()
        except ValueError:  # not in a Dask task
            self._worker = None
        self._token, self._key = token, key
        self._every_s = SEND_EVERY_S if every_s is None else float(every_s)
        self._clock = clock
        self._sent_at = -math.inf

    def __call__(self, n: int) -> None:
        now = self._clock()
        if self._worker is None or now - self._sent_at < self._every_s:
            return
        self._sent_at = now
        try:
            self._worker.log_event(TOPIC, [self._token, self._key, int(n)])
        except Exception as exc:  # a worker shutting down: the unit's end is counted anyway
            _log.debug("progress event of %s not sent: %s", self._key, exc)


_RECEIVERS: dict[str, tuple[str, UnitCounts]] = {}  # token: (client id, counts)
_RECEIVERS_LOCK = threading.Lock()


def _receive(event: tuple[float, Any]) -> None:
    """The topic's handler (on the client's event loop): note the count on its run."""
    try:
        _, (token, key, n) = event
        with _RECEIVERS_LOCK:
            found = _RECEIVERS.get(token)
        if found is not None:
            found[1].advance(key, int(n))
    except (TypeError, ValueError):  # not one of ours
        return


@contextlib.contextmanager
def listening(client: Any, counts: UnitCounts) -> Iterator[str]:
    """Receive the progress events of a run on ``client`` into ``counts``; yields its token.

    The client subscribes to :data:`TOPIC` while at least one run on it listens; events of
    other runs (other drivers on the same scheduler) carry another token and are ignored.
    """
    token = uuid.uuid4().hex
    with _RECEIVERS_LOCK:
        _RECEIVERS[token] = (client.id, counts)
        client.subscribe_topic(TOPIC, _receive)
    try:
        yield token
    finally:
        with _RECEIVERS_LOCK:
            del _RECEIVERS[token]
            if all(owner != client.id for owner, _ in _RECEIVERS.values()):
                with contextlib.suppress(Exception):  # a client whose scheduler is gone
                    client.unsubscribe_topic(TOPIC)
