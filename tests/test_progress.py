"""microscale.progress: counts, time left, and the console bars fed by the logger."""

from __future__ import annotations

import io
import logging

from microscale.progress import LOGGER_NAME, ConsoleBars, StageProgress, format_duration


def test_counts_and_estimate():
    times = iter([0.0, 4.0, 8.0, 20.0])
    p = StageProgress("features cnn", "tile batches", clock=lambda: next(times))
    assert p.update(0, 5) == "0/5 tile batches"
    assert p.update(1, 5) == "1/5 tile batches, 4 s elapsed, about 16 s left"
    assert p.update(2, 5) == "2/5 tile batches, 8 s elapsed, about 12 s left"
    assert p.update(5, 5) == "5/5 tile batches, 20 s elapsed"
    assert p.last.fraction == 1.0


def test_durations():
    assert [format_duration(s) for s in (0, 59.6, 61, 7260)] == [
        "0 s",
        "1 min 0 s",
        "1 min 1 s",
        "2 h 1 min",
    ]


def test_log_records_carry_the_event_and_feed_bars():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    out = io.StringIO()
    bars = ConsoleBars.attach(out)
    keep = Keep()
    logging.getLogger(LOGGER_NAME).addHandler(keep)
    try:
        p = StageProgress("ingest", "files")
        for i in range(4):
            p.update(i, 3)  # a 4th call past the total must not break the bar
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(keep)
        bars.detach()
    assert [r.progress.done for r in records] == [0, 1, 2, 3]
    assert records[1].getMessage().startswith("ingest: 1/3 files")
    assert out.getvalue() == ""  # not a terminal: no bars (tqdm's disable=None)
    assert not logging.getLogger(LOGGER_NAME).handlers
