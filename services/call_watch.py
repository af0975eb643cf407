"""Every live call's watches, looked at from one greenlet per worker.

A call is watched for a Twilio stream gone quiet, its time limit, a caller gone silent and a
Realtime socket showing no sign of life. Each needs only a look every fraction of a second. A
sleeping greenlet apiece cost every call about 9 KB (the greenlet and its saved stack) and a
wake-up per look. Instead, one greenlet ticks while any call is watched, and runs each call's
check. A check reads and decides. Whatever may block (a send, a close, ending the call) it hands
to the call's own greenlets, so one slow socket never delays another call's checks.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import gevent

from services.settings import CallTiming

log = logging.getLogger("call")

Check = Callable[[float], None]


def tick_for(timing: CallTiming) -> float:
    """Fine enough for every watch's deadlines, each met within a small part of itself."""
    return max(0.05, min(0.25, timing.silence_s / 8, timing.realtime_pong_timeout_s / 4,
                         timing.response_stall_s / 8, timing.twilio_idle_s / 4))


class CallWatch:
    """Calls add their check when they start and remove it when they end, from their own
    greenlets; the tick greenlet runs the checks with the monotonic time of the tick."""

    def __init__(self, tick_s: float, clock: Callable[[], float] = time.monotonic):
        self._tick_s = tick_s
        self._clock = clock
        # Guards: _checks and _greenlet. Any call's greenlet adds or removes its check (starting the
        # tick greenlet when it is not running); the tick greenlet takes a copy of the checks each
        # tick, and clears _greenlet as it stops once none are left.
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._greenlet: gevent.Greenlet | None = None

    def watch(self, call_sid: str, check: Check) -> None:
        with self._lock:
            self._checks[call_sid] = check
            if self._greenlet is None:
                self._greenlet = gevent.spawn(self._run)

    def unwatch(self, call_sid: str) -> None:
        with self._lock:
            self._checks.pop(call_sid, None)

    @property
    def watched(self) -> int:
        with self._lock:
            return len(self._checks)

    @property
    def running(self) -> bool:
        """The tick greenlet is up: some call is watched, or the last one left within a tick."""
        with self._lock:
            return self._greenlet is not None

    def _run(self) -> None:
        while True:
            gevent.sleep(self._tick_s)
            with self._lock:
                if not self._checks:
                    self._greenlet = None
                    return
                checks = list(self._checks.items())
            now = self._clock()
            for call_sid, check in checks:
                try:
                    check(now)
                except Exception:
                    # Once: a check that fails fails again on every tick.
                    log.exception("call watch failed: the call is no longer watched", extra={"call_sid": call_sid})
                    self.unwatch(call_sid)
