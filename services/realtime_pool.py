"""Realtime connections opened before a call needs one, a few per process.

A call's greeting cannot start before its Realtime session is open, and opening one to the
service (TLS and the websocket upgrade, far away) takes 150-300 ms. Opening it when Twilio's
upgrade arrives (`RealtimeConnection.open_early`) hides only the few milliseconds until `start`;
a connection taken from here is open already.

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
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._api_key = api_key
        self._size = size
        self._idle_s = idle_s
        self._warm_s = warm_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        # Guards `_waiting`, `_wanted_at`, `_filler` and `_closed`. Any greenlet taking a connection writes
        # them (the media route's), and the filler; never held across a connect or a close.
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._wanted_at = float("-inf")  # when a call last asked for a connection
        self._filler: gevent.Greenlet | None = None
        self._closed = False
        self._taken_one = Event()  # set by `take` when it hands one out: the filler refills at once
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
            if taken is not None:
                self.taken += 1
                self._taken_one.set()
            if self._filler is None or self._filler.dead:
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
        The filler sees it within a second, and closes what it was opening."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            self._closed = True
            self._filler = None
        for entry in waiting:
            entry.connection.close()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

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
        """Keep `size` fresh connections waiting while calls come; then close them and stop."""
        while True:
            now = self._clock()
            with self._lock:
                if self._filler is not gevent.getcurrent():
                    return  # closed: what waited is closed already
                if now - self._wanted_at >= self._warm_s:
                    waiting, self._waiting = self._waiting, []
                    self._filler = None
                    cold = True
                else:
                    waiting = [w for w in self._waiting if now - w.opened_at >= self._idle_s]
                    self._waiting = [w for w in self._waiting if w not in waiting]
                    short = self._size - len(self._waiting)
                    cold = False
            for entry in waiting:
                entry.connection.close()
            if cold:
                return
            if short <= 0:
                if not self._taken_one.wait(min(1.0, self._idle_s / 4)):
                    self._read_waiting()
                self._taken_one.clear()
                continue
            # All at once: after a burst of calls the pool is back within one handshake.
            opened = [g.value for g in gevent.joinall([gevent.spawn(self._open_one) for _ in range(short)])]
            with self._lock:
                kept = self._filler is gevent.getcurrent()
                if kept:
                    self._waiting += [_Waiting(c, self._clock()) for c in opened if c is not None]
            if not kept:  # the pool was closed meanwhile
                for connection in opened:
                    if connection is not None:
                        connection.close()
                return
            if None in opened:
                gevent.sleep(_RETRY_S)

    def _open_one(self) -> RealtimeConnection | None:
        connection = RealtimeConnection(self.url, self._api_key, self._connect_timeout_s)
        try:
            connection.connect()
        except RealtimeUnavailable as exc:
            log.warning("could not open a Realtime connection ahead of calls", extra={"error": str(exc)})
            return None
        return connection


