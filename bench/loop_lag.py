"""How late a gevent loop runs: a greenlet that sleeps 10 ms at a time and notes the oversleep.

A load generator whose loop lags adds that lag to every figure it measures; the
benchmark prints these so a reader can tell the server's delays from the fakes'.
"""
from __future__ import annotations

import time

import gevent

INTERVAL_S = 0.010


class LoopLag:
    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> "LoopLag":
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            due += INTERVAL_S
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            now = time.monotonic()
            self.lags_ms.append((now - due) * 1000)
            if now - due > INTERVAL_S:
                due = now  # do not count one stall again on every tick after it

    def summary(self) -> dict:
        ordered = sorted(self.lags_ms)
        if not ordered:
            return {"p50": None, "p99": None, "max": None, "n": 0}

        def at(p):
            return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 2)

        return {"p50": at(50), "p99": at(99), "max": round(ordered[-1], 2), "n": len(ordered)}
