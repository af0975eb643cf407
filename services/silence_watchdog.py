"""Notices a caller who has gone quiet.

After `period_s` of silence the agent asks whether the caller is still there; after another
period without speech it says goodbye and the call ends. Time while the agent speaks, a
response or a tool is under way, or the call is ending does not count (`busy`). Caller speech
or a keypad press starts the count again.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import gevent


class SilenceWatchdog:
    """`run` is its own greenlet; `heard_from_caller` may be called from any greenlet."""

    def __init__(self, period_s: float, busy: Callable[[], bool], ask: Callable[[], None],
                 give_up: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self._period_s = period_s
        self._busy = busy
        self._ask = ask
        self._give_up = give_up
        self._clock = clock
        # Guards: _activity. Written by the Realtime greenlet (speech) and RX (keypad), read by run().
        self._lock = threading.Lock()
        self._activity = 0

    def heard_from_caller(self) -> None:
        with self._lock:
            self._activity += 1

    def run(self) -> None:
        tick = min(0.25, self._period_s / 8)
        quiet_since = self._clock()
        stage = 0  # 0: waiting, 1: asked, 2: gave up (until the caller is heard again)
        seen = self._activity
        while True:
            gevent.sleep(tick)
            now = self._clock()
            with self._lock:
                activity = self._activity
            if activity != seen or self._busy():
                if activity != seen:
                    seen, stage = activity, 0
                quiet_since = now
                continue
            if stage < 2 and now - quiet_since >= self._period_s:
                (self._ask if stage == 0 else self._give_up)()
                stage += 1
                quiet_since = now
