"""Realtime connections opened before a call needs one, a few per process.

A call's greeting cannot start before its Realtime session is open, and opening one to the
service (TLS and the websocket upgrade, far away) takes 150-300 ms. Opening it when Twilio's
upgrade arrives (`RealtimeConnection.open_early`) hides only the few milliseconds until `start`;
a connection taken from here is open already.

It keeps `size` connections, and one more each time a call finds none while calls come (they come
faster than it refills: the next burst finds enough), up to `max_size`; one fewer each time one
waits out its `idle_s` unused. Each connect runs on its own greenlet, so every connection taken
starts its replacement at once.

The pool is kept only while calls come: the first call after a quiet spell starts it, and it
empties `warm_s` after the last call took a connection, so an idle server holds no sessions
open. While a connection waits, the pool reads what the service sends on it about once a
second (pings are answered, a close or a drop discards it), and a call taking it reads what is
left first; the events read are kept for the call. After `idle_s` it is closed and replaced.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event

from services.realtime_client import RealtimeConnection, RealtimeUnavailable

log = logging.getLogger("realtime")

# After a failed connect, the pool tries again this much later (the call in front of it connects
# by itself meanwhile).
_RETRY_S = 5.0


@dataclass
class _Waiting:
    connection: RealtimeConnection
    opened_at: float


class RealtimePool:
    def __init__(self, url: str, api_key: str, *, size: int, idle_s: float, warm_s: float, connect_timeout_s: float,
                 max_size: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._api_key = api_key
        self._size = size
        self._max = max(size, size if max_size is None else max_size)
        self._idle_s = idle_s
        self._warm_s = warm_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        # Guards `_waiting`, `_opening`, `_target`, `_wanted_at`, `_retry_at`, `_filler` and `_closed`.
        # Any greenlet taking a connection writes them (the media route's), the filler and its
        # openers; never held across a connect or a close.
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._opening = 0  # connects under way, each on a greenlet of its own
        # How many to keep: `size`, one more each time a call finds none while calls come (up to
        # `max_size`), one fewer each time one waits its `idle_s` out unused.
        self._target = size
        self._wanted_at = float("-inf")  # when a call last asked for a connection
        self._retry_at = float("-inf")  # after a failed connect (monotonic: real time, whatever `clock`)
        self._filler: gevent.Greenlet | None = None
        self._closed = False
        self._wake = Event()  # set by `take`: the filler tops the pool up at once
        self.taken = 0  # connections handed to calls

    def take(self, url: str) -> RealtimeConnection | None:
        """An open connection to `url` if one waits (the oldest still fresh), else None; either
        way the pool is (re)started so the next call finds one."""
        if self._size <= 0 or self._closed:
            return None
        now = self._clock()
        stale: list[RealtimeConnection] = []
        taken = None
        with self._lock:
            self._wanted_at = now
            while self._waiting and taken is None:
                waiting = self._waiting.pop(0)
                if url == self.url and now - waiting.opened_at < self._idle_s:
                    taken = waiting.connection
                else:
                    stale.append(waiting.connection)
            warm = self._filler is not None and not self._filler.dead
            if taken is not None:
                self.taken += 1
            elif warm and url == self.url:
                self._target = min(self._max, self._target + 1)  # calls come faster than it refills
            self._wake.set()
            if not warm:
                # On the loop's next turn: the call's own connect, when none waited, goes out first.
                self._filler = gevent.spawn_later(0, self._fill)
        for connection in stale:
            connection.close()
        if taken is not None and not taken.read_waiting():
            taken.close()  # closed by the service while it waited: the call opens its own
            return None
        return taken

    def close(self) -> None:
        """Close every waiting connection and stop refilling, for good (the process is stopping).
        Connects under way close what they open."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            self._closed = True
            self._filler = None
        self._wake.set()
        for entry in waiting:
            entry.connection.close()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def target(self) -> int:
        with self._lock:
            return self._target

    def _read_waiting(self) -> None:
        """Read each waiting connection in turn, out of the list while it is read (a call cannot
        take the one being read; it takes another, or opens its own); put back those still open."""
        with self._lock:
            entries = list(self._waiting)
        for entry in entries:
            with self._lock:
                if entry not in self._waiting:
                    continue  # taken meanwhile
                self._waiting.remove(entry)
            alive = entry.connection.read_waiting()
            with self._lock:
                kept = alive and self._filler is gevent.getcurrent()
                if kept:
                    self._waiting.append(entry)
            if not kept:
                entry.connection.close()

    def _fill(self) -> None:
        """Keep `_target` fresh connections waiting or on their way while calls come; then close
        them and stop. Each connect runs on its own greenlet, so a call taking one starts its
        replacement at once, whatever the others' handshakes are doing."""
        while True:
            now = self._clock()
            with self._lock:
                if self._filler is not gevent.getcurrent():
                    return  # closed: what waited is closed already
                if now - self._wanted_at >= self._warm_s:
                    expired, self._waiting = self._waiting, []
                    self._filler = None
                    cold = True
                else:
                    expired = [w for w in self._waiting if now - w.opened_at >= self._idle_s]
                    self._waiting = [w for w in self._waiting if w not in expired]
                    self._target = max(self._size, self._target - len(expired))
                    short = 0 if time.monotonic() < self._retry_at else \
                        self._target - len(self._waiting) - self._opening
                    self._opening += max(0, short)
                    cold = False
            for entry in expired:
                entry.connection.close()
            if cold:
                return
            for _ in range(short):
                gevent.spawn(self._open_into_pool)
            if not self._wake.wait(min(1.0, self._idle_s / 4)):
                self._read_waiting()
            self._wake.clear()

    def _open_into_pool(self) -> None:
        connection = self._open_one()
        with self._lock:
            self._opening -= 1
            kept = connection is not None and self._filler is not None and not self._closed
            if kept:
                self._waiting.append(_Waiting(connection, self._clock()))
            elif connection is None:
                self._retry_at = time.monotonic() + _RETRY_S
        if connection is not None and not kept:
            connection.close()  # the pool was closed or went cold meanwhile

    def _open_one(self) -> RealtimeConnection | None:
        connection = RealtimeConnection(self.url, self._api_key, self._connect_timeout_s)
        try:
            connection.connect()
        except RealtimeUnavailable as exc:
            log.warning("could not open a Realtime connection ahead of calls", extra={"error": str(exc)})
            return None
        return connection


