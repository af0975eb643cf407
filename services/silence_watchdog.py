"""Notices a caller who has gone quiet.

After `period_s` of silence the agent asks whether the caller is still there; after another
period without speech it says goodbye and the call ends. Time while the agent speaks, a
response or a tool is under way, or the call is ending does not count (`busy`). Caller speech
or a keypad press starts the count again.
"""
from __future__ import annotations

import threading
from typing import Callable


class SilenceWatchdog:
    """Looked at by the call watch (`check`, from its greenlet); `heard_from_caller` may be
    called from any greenlet. `ask` and `give_up` must not block: the call hands each to a
    greenlet of its own."""

    def __init__(self, period_s: float, busy: Callable[[], bool], ask: Callable[[], None],
                 give_up: Callable[[], None]):
        self._period_s = period_s
        self._busy = busy
        self._ask = ask
        self._give_up = give_up
        # Guards: _activity. Written by the Realtime greenlet (speech) and RX (keypad), read by `check`.
        self._lock = threading.Lock()
        self._activity = 0
        # The watch greenlet's own: the count starts at its first look.
        self._seen = 0
        self._quiet_since: float | None = None
        self._stage = 0  # 0: waiting, 1: asked, 2: gave up (until the caller is heard again)

    def heard_from_caller(self) -> None:
        with self._lock:
            self._activity += 1

    def check(self, now: float) -> None:
        with self._lock:
            activity = self._activity
        if self._quiet_since is None or activity != self._seen or self._busy():
            if activity != self._seen:
                self._seen, self._stage = activity, 0
            self._quiet_since = now
            return
        if self._stage < 2 and now - self._quiet_since >= self._period_s:
            (self._ask if self._stage == 0 else self._give_up)()
            self._stage += 1
            self._quiet_since = now
