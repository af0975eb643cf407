"""The calls this process is carrying now, and their end when the process stops."""
from __future__ import annotations

import os
import socket
import threading
from typing import Callable, Iterable, Protocol

import gevent
from gevent.event import Event

from services.logging_setup import call_logger
from services.store.end_reasons import EndReason


def this_process() -> str:
    """This process as host:pid: where a call's stream, and so the whole call, lives.

    Read when asked, never at import: gunicorn's master imports this module before it forks.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


class LiveCall(Protocol):
    """What the process may ask of a call it carries."""

    def end(self, reason: str) -> None: ...

    def shut_down(self) -> None:
        """The process is stopping: close the call politely (a short goodbye) soon."""

    def end_from_console(self) -> None:
        """The console's End call: a short goodbye, then the line closes."""


class LiveCalls:
    """Once `close`d (the process is stopping) the media route takes no new stream; the calls
    already here are told to close (`shut_down_all`, `end_all`) and waited for (`wait_until_empty`)."""

    def __init__(self) -> None:
        # Guards: _calls, _closed, and the setting of _empty. Written by media handlers as streams
        # open and close and by the shutdown; read by /healthz.
        self._lock = threading.Lock()
        self._calls: dict[str, LiveCall] = {}
        self._closed = False
        self._empty = Event()
        self._empty.set()
        # Set once, at start-up (create_app): told whenever a call arrives, with none here before.
        self.on_first_call: Callable[[], None] | None = None

    def add(self, call_sid: str, session: LiveCall) -> None:
        with self._lock:
            first = not self._calls
            self._calls[call_sid] = session
            self._empty.clear()
        if first and self.on_first_call is not None:
            self.on_first_call()

    def call_sids(self) -> list[str]:
        with self._lock:
            return list(self._calls)

    def remove(self, call_sid: str) -> None:
        with self._lock:
            self._calls.pop(call_sid, None)
            if not self._calls:
                self._empty.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> None:
        """Take no new calls: the process is stopping."""
        with self._lock:
            self._closed = True

    def wait_until_empty(self, timeout: float) -> bool:
        """Until no call is left, at most `timeout` seconds; True when none is."""
        return self._empty.wait(max(0.0, timeout))

    def shut_down_all(self) -> int:
        """Tell every live call to close with a goodbye; returns how many were told."""
        return self._each(lambda call: call.shut_down(), "shut down", timeout=5.0)

    def end_all(self, reason: EndReason, timeout: float) -> int:
        """End every live call now, without a goodbye (each stores its row and post-call job);
        waits at most `timeout` for their ends. Returns how many there were."""
        return self._each(lambda call: call.end(reason), "end", timeout=timeout)

    def end_from_console(self, call_sids: Iterable[str], timeout: float = 5.0) -> int:
        """Tell each of these calls carried here to say goodbye and hang up; returns how many were told."""
        wanted = set(call_sids)
        return self._each(lambda call: call.end_from_console(), "end from the console", timeout=timeout,
                          only=wanted)

    def _each(self, act: Callable[[LiveCall], None], what: str, timeout: float,
              only: set[str] | None = None) -> int:
        with self._lock:
            calls = [(sid, call) for sid, call in self._calls.items() if only is None or sid in only]

        def run(call_sid: str, call: LiveCall) -> None:
            # A greenlet each: one call's slow socket must not hold up the others. The call's own
            # locks are taken there, never while ours is held (it is a leaf).
            try:
                act(call)
            except Exception:
                call_logger("call", call_sid).exception("shutdown: the call could not be told to close",
                                                      extra={"action": what})

        gevent.joinall([gevent.spawn(run, sid, call) for sid, call in calls], timeout=timeout)
        return len(calls)

