"""Sign-in attempts slowed and limited, per peer address, in this process only.

Each worker counts its own: with N workers a guesser gets N times the attempts. Enough to make
guessing a long token hopeless; a shared limit would need the database or a proxy in front.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

MAX_FAILURES = 10  # within WINDOW_S, then refused until the oldest failure leaves the window
WINDOW_S = 600.0
FAILURE_DELAY_S = 0.3  # each wrong secret waits this long before it is answered
MAX_PEERS = 10_000  # addresses remembered; the least recently failing are forgotten first


class SignInThrottle:
    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # Guards: _failures. Written by every request greenlet that signs in.
        self._lock = threading.Lock()

    def retry_after_s(self, peer: str, now: float | None = None) -> float:
        """0 when `peer` may try now, else how long until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(peer, now)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[0] + self.window_s - now)

    def failed(self, peer: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(peer, now)
            times.append(now)
            self._failures[peer] = times
            self._failures.move_to_end(peer)
            while len(self._failures) > MAX_PEERS:
                self._failures.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        with self._lock:
            self._failures.pop(peer, None)

    def _recent(self, peer: str, now: float) -> deque[float]:
        times = self._failures.get(peer) or deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times
