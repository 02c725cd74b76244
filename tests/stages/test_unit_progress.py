"""stages/_unit_progress.py: counts within units, reconciled with the units' ends."""

from __future__ import annotations

import itertools

from microscale.stages import _unit_progress as up


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _counts(total, every_s=1.0):
    seen, clock = [], Clock()
    counts = up.UnitCounts(lambda d, t: seen.append((d, t)), total, every_s=every_s, clock=clock)
    return counts, seen, clock


def test_a_running_unit_counts_less_than_its_size_until_it_finishes():
    counts, seen, _ = _counts(10, every_s=0.0)
    counts.report(force=True)
    counts.start("a", 4)
    counts.start("b", 6)
    counts.advance("a", 99)  # more than its size: the unit is not recorded yet
    counts.advance("b", 2)
    counts.report()
    assert seen[-1] == (3 + 2, 10)
    counts.finish("a")
    assert seen[-1] == (4 + 2, 10)
    counts.finish("b")
    assert seen == [(0, 10), (5, 10), (6, 10), (10, 10)]


def test_the_count_never_goes_back_and_late_events_are_ignored():
    counts, seen, _ = _counts(10, every_s=0.0)
    counts.start("a", 5)
    counts.start("b", 5)
    counts.advance("a", 4)
    counts.report()
    counts.advance("a", 1)  # the task restarted on another worker: counts from zero again
    counts.report()
    counts.drop("a")  # given up: its progress no longer counts, but nothing is reported lower
    counts.report()
    counts.finish("b")
    counts.advance("b", 3)  # an event that arrives after its unit's end
    counts.advance("x", 3)  # not a unit of this run
    counts.report()
    assert seen == [(4, 10), (5, 10)]
    assert counts.count == 5


def test_reports_within_units_are_throttled_but_ends_are_not():
    counts, seen, clock = _counts(100, every_s=0.5)
    counts.report(force=True)
    counts.start("a", 50)
    counts.start("b", 50)
    for n in range(1, 40):  # a forward pass every 0.1 s
        clock.now += 0.1
        counts.advance("a", n)
        counts.report()
    assert len(seen) == 1 + 39 // 5  # one report per 0.5 s
    counts.finish("b")  # at once, even 0.1 s after the last report
    assert seen[-1] == (50 + 39, 100)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})


def test_an_event_sender_outside_a_dask_task_does_nothing():
    send = up.EventSender("token", "key")
    send(3)  # no worker: no error, nothing sent


def test_the_handler_dispatches_by_run_and_ignores_foreign_events():
    counts, seen, _ = _counts(10, every_s=0.0)
    counts.start("k", 10)

    class FakeClient:
        id = "client-1"
        calls = []

        def subscribe_topic(self, topic, handler):
            self.calls.append(("subscribe", topic))

        def unsubscribe_topic(self, topic):
            self.calls.append(("unsubscribe", topic))

    client = FakeClient()
    with up.listening(client, counts) as token, up.listening(client, up.UnitCounts(None, 1)):
        up._receive((0.0, [token, "k", 7]))
        up._receive((0.0, ["another run", "k", 9]))
        up._receive((0.0, "not a progress event"))
        up._receive((0.0, [token, "k", "x"]))
    assert counts.count == 7
    assert [c for c, _ in client.calls] == ["subscribe", "subscribe", "unsubscribe"]
    assert not up._RECEIVERS


def test_sender_throttles_per_task():
    sent, clock = [], Clock()

    class Worker:
        def log_event(self, topic, msg):
            sent.append((topic, msg))

    send = up.EventSender("t", "k", every_s=0.25, clock=clock)
    send._worker = Worker()
    for n, now in zip(range(1, 9), itertools.count(0.0, 0.1), strict=False):
        clock.now = now
        send(n)
    assert sent == [(up.TOPIC, ["t", "k", n]) for n in (1, 4, 7)]
