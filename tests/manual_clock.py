"""A clock that moves only when the test moves it, and a sleep on it, for code that takes
`clock=` and `sleep=` (the TX pacer): time is driven by the test, never read off the machine.
"""
from __future__ import annotations

import heapq
import itertools

import gevent
from gevent.event import Event


class ManualClock:
    """Stands at `origin` (seconds, as a monotonic clock might) until `advance_ms` moves it.

    Kept as whole microseconds since the origin, so moving it never accumulates rounding; read
    as `origin + elapsed`, the float a monotonic clock standing there would return. Greenlets that
    `sleep` on it wake in deadline order, each with the clock at its own deadline, and run until
    they block again before the clock moves on: what they do is a function of the test's steps.
    One test greenlet moves it; the code under test runs in greenlets of its own.
    """

    def __init__(self, origin: float = 0.0):
        self.origin = origin
        self._elapsed_us = 0
        self._sleepers: list[tuple[int, int, Event]] = []  # heap of (deadline µs, arrival, wake-up)
        self._arrivals = itertools.count()

    def __call__(self) -> float:
        return self.origin + self._elapsed_us / 1_000_000

    @property
    def elapsed_ms(self) -> float:
        """Milliseconds since the origin: what a test compares with its expectations."""
        return self._elapsed_us / 1000

    def sleep(self, seconds: float) -> None:
        """Block the calling greenlet until the clock has been moved `seconds` on (at least 1 µs)."""
        if seconds <= 0:
            gevent.sleep(0)
            return
        wake = Event()
        heapq.heappush(self._sleepers, (self._elapsed_us + max(1, round(seconds * 1_000_000)),
                                        next(self._arrivals), wake))
        wake.wait()

    def advance_ms(self, ms: float) -> None:
        """Move the clock `ms` on, waking each sleeper at its deadline on the way."""
        target = self._elapsed_us + round(ms * 1000)
        self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._elapsed_us = max(self._elapsed_us, deadline)  # after a stall, late
            wake.set()
            self.settle()
        self._elapsed_us = target
        self.settle()

    def spend_ms(self, ms: float) -> None:
        """The running greenlet takes `ms` without yielding (a slow write, a parse): time moves on
        and nobody else runs; sleepers due meanwhile wake, late, when the clock is next advanced."""
        self._elapsed_us += round(ms * 1000)

    def stall_ms(self, ms: float) -> None:
        """The event loop was blocked for `ms`: time jumps on, and the sleepers due meanwhile wake
        only then, late, in deadline order."""
        self.spend_ms(ms)
        self.advance_ms(0)

    @staticmethod
    def settle() -> None:
        """Let every greenlet that can run do so, until all of them wait (on this clock or an event)."""
        gevent.idle()
