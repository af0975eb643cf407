"""The worker's call watch: every watched call looked at each tick, from one greenlet."""
from __future__ import annotations

import dataclasses
import logging

import gevent

from services.call_watch import CallWatch, tick_for
from services.settings import CallTiming
from tests.fakes.waiting import wait_for


def test_each_watched_call_is_looked_at_every_tick_until_it_is_unwatched():
    watch = CallWatch(0.01)
    seen: dict[str, list[float]] = {"CA1": [], "CA2": []}
    watch.watch("CA1", seen["CA1"].append)
    watch.watch("CA2", seen["CA2"].append)
    wait_for(lambda: len(seen["CA1"]) >= 3 and len(seen["CA2"]) >= 3, 5, message="three ticks")
    assert seen["CA1"] == sorted(seen["CA1"]), "the tick's monotonic time"
    watch.unwatch("CA1")
    looked = len(seen["CA1"])
    at = len(seen["CA2"])
    wait_for(lambda: len(seen["CA2"]) >= at + 3, 5, message="three more ticks")
    assert len(seen["CA1"]) == looked
    assert watch.watched == 1


def test_the_tick_greenlet_stops_with_the_last_call_and_starts_with_the_next():
    watch = CallWatch(0.01)
    first: list[float] = []
    watch.watch("CA1", first.append)
    wait_for(lambda: first, 5, message="a tick")
    watch.unwatch("CA1")
    wait_for(lambda: not watch.running, 5, message="the tick greenlet to stop")
    second: list[float] = []
    watch.watch("CA2", second.append)
    wait_for(lambda: second, 5, message="a tick after the restart")
    watch.unwatch("CA2")


def test_a_check_that_fails_is_logged_once_and_dropped_and_the_others_go_on(caplog):
    watch = CallWatch(0.01)
    healthy: list[float] = []

    def broken(now: float) -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="call"):
        watch.watch("CAbroken", broken)
        watch.watch("CAhealthy", healthy.append)
        wait_for(lambda: len(healthy) >= 5, 5, message="five ticks")
    failures = [r for r in caplog.records if r.getMessage().startswith("call watch failed")]
    assert len(failures) == 1 and failures[0].call_sid == "CAbroken" and failures[0].exc_info is not None
    assert watch.watched == 1
    watch.unwatch("CAhealthy")
    gevent.sleep(0)


def test_the_tick_is_fine_enough_for_the_shortest_deadline():
    assert tick_for(CallTiming()) == 0.25
    quick = dataclasses.replace(CallTiming(), realtime_pong_timeout_s=0.3, silence_s=0.8)
    assert tick_for(quick) == 0.075
    assert tick_for(dataclasses.replace(CallTiming(), twilio_idle_s=0.01)) == 0.05, "never busier than 20 a second"
