"""The greenlets one call runs besides RX: TX, the Realtime greenlet, its timers and guards."""
from __future__ import annotations

import threading
from typing import Callable

import gevent


class CallGreenlets:
    """Any of the call's greenlets may spawn; `close` (from `CallSession.end`) kills every one
    but the greenlet calling it, and nothing starts after it."""

    def __init__(self) -> None:
        # Guards: _greenlets, _closed. Written by whichever greenlet spawns, and by close().
        self._lock = threading.Lock()
        self._greenlets: list[gevent.Greenlet] = []
        self._closed = False

    def spawn(self, run: Callable, *args) -> gevent.Greenlet | None:
        return self.spawn_later(0, run, *args)

    def spawn_later(self, seconds: float, run: Callable, *args) -> gevent.Greenlet | None:
        with self._lock:
            if self._closed:
                return None
            # Guards and timers come and go: keep the live ones only (a dead greenlet is a kilobyte).
            self._greenlets = [greenlet for greenlet in self._greenlets if not greenlet.dead]
            greenlet = gevent.spawn_later(seconds, run, *args) if seconds > 0 else gevent.spawn(run, *args)
            self._greenlets.append(greenlet)
            return greenlet

    def close(self) -> None:
        with self._lock:
            self._closed = True
            greenlets, self._greenlets = self._greenlets, []
        me = gevent.getcurrent()
        for greenlet in greenlets:
            if greenlet is not me:
                greenlet.kill(block=False)
