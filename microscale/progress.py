"""Progress of a stage in counts, with an estimate of the time left.

A stage reports ``on_done(done, total)`` after each completed unit of work (a file, a batch
of tiles, a group of distance blocks: one Dask task; the features stage counts tiles, and
also within a batch after each forward pass: :mod:`microscale.stages._unit_progress`).
:class:`StageProgress` turns those calls into a line a person can read, ``"12/40 files,
3 s elapsed, about 9 s left"``, and logs each change on the ``microscale.progress`` logger
(at INFO, with the counts in the record's ``progress`` attribute), where
:class:`ConsoleBars` draws one bar per stage. The Prefect flows put the same line in their
progress artifacts' descriptions (``flows/_progress.py``).

Examples
--------
>>> clock = iter([0.0, 10.0]).__next__
>>> p = StageProgress("ingest", "files", clock=clock)
>>> p.update(0, 40)
'0/40 files'
>>> p.update(10, 40)
'10/40 files, 10 s elapsed, about 30 s left'
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConsoleBars", "LOGGER_NAME", "ProgressEvent", "StageProgress", "format_duration"]

#: The logger every :class:`StageProgress` reports on.
LOGGER_NAME = "microscale.progress"


def format_duration(seconds: float) -> str:
    """A duration as people say it: ``"9 s"``, ``"2 min 5 s"``, ``"1 h 3 min"``.

    Examples
    --------
    >>> format_duration(9.4), format_duration(125), format_duration(3780)
    ('9 s', '2 min 5 s', '1 h 3 min')
    """
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of a stage.

    Attributes
    ----------
    stage : str
        What is counted, e.g. ``"features cnn"``.
    unit : str
        The plural noun of the count, e.g. ``"tiles"``.
    done, total : int
        Units completed, of all units of the stage.
    elapsed_s : float
        Seconds since the stage's first report.
    remaining_s : float or None
        Estimated seconds left (the rate so far times the units left); None before the
        first unit completes.
    """

    stage: str
    unit: str
    done: int
    total: int
    elapsed_s: float
    remaining_s: float | None

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for a stage with nothing to do)."""
        return 1.0 if self.total == 0 else self.done / self.total

    def describe(self) -> str:
        """``"12/40 files, 3 s elapsed, about 9 s left"`` (the times once a unit is done)."""
        text = f"{self.done}/{self.total} {self.unit}"
        if self.done == 0 or self.remaining_s is None:
            return text
        text += f", {format_duration(self.elapsed_s)} elapsed"
        if self.done < self.total:
            text += f", about {format_duration(self.remaining_s)} left"
        return text


class StageProgress:
    """A callable ``on_done(done, total)`` that counts, estimates and logs a stage's progress.

    Parameters
    ----------
    stage : str
        What is counted, e.g. ``"ingest"`` or ``"distances cnn"``.
    unit : str
        The plural noun of the count, e.g. ``"files"``.
    clock : callable, optional
        Seconds as a float (default :func:`time.monotonic`).
    """

    def __init__(
        self, stage: str, unit: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stage = stage
        self.unit = unit
        self._clock = clock
        self._start: float | None = None
        self.last: ProgressEvent | None = None

    def event(self, done: int, total: int) -> ProgressEvent:
        """The report of ``done`` of ``total`` units, now."""
        now = self._clock()
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        remaining = elapsed / done * (total - done) if done > 0 else None
        if remaining is not None and not math.isfinite(remaining):
            remaining = None
        return ProgressEvent(self.stage, self.unit, int(done), int(total), elapsed, remaining)

    def update(self, done: int, total: int) -> str:
        """Record ``done`` of ``total``, log it, and return its description."""
        self.last = event = self.event(done, total)
        logger = logging.getLogger(LOGGER_NAME)
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s: %s", self.stage, event.describe(), extra={"progress": event})
        return event.describe()

    __call__ = update


class ConsoleBars(logging.Handler):
    """A logging handler that draws a tqdm bar per stage from ``microscale.progress`` records.

    Bars are drawn only on a terminal (tqdm's ``disable=None``): piped or redirected output
    stays free of them. Use :meth:`attach` to install it for the duration of a run.

    Parameters
    ----------
    file : file-like, optional
        Where the bars go (default standard error).
    """

    def __init__(self, file: Any = None) -> None:
        super().__init__(logging.INFO)
        self._file = file
        self._bars: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "progress", None)
        if not isinstance(event, ProgressEvent):
            return
        from tqdm.auto import tqdm

        bar = self._bars.get(event.stage)
        if bar is None or bar.total != event.total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=event.total, desc=event.stage, unit=f" {event.unit}", disable=None,
                file=self._file, dynamic_ncols=True, leave=True,
            )  # fmt: skip
            self._bars[event.stage] = bar
        bar.update(event.done - bar.n)
        if event.done >= event.total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        super().close()

    @classmethod
    def attach(cls, file: Any = None) -> ConsoleBars:
        """Install a handler on the ``microscale.progress`` logger; ``detach()`` removes it."""
        handler = cls(file)
        logger = logging.getLogger(LOGGER_NAME)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return handler

    def detach(self) -> None:
        """Remove the handler from the ``microscale.progress`` logger and close its bars."""
        logger = logging.getLogger(LOGGER_NAME)
        logger.removeHandler(self)
        if not logger.handlers:
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
        self.close()
