"""The calls this process is carrying now."""
from __future__ import annotations

import os
import socket
import threading
from typing import Protocol


def this_process() -> str:
    """This process as host:pid: where a call's stream, and so the whole call, lives.

    Read when asked, never at import: gunicorn's master imports this module before it forks.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


class LiveCall(Protocol):
    """What the process may ask of a call it carries."""

    def end(self, reason: str) -> None: ...


class LiveCalls:
    def __init__(self) -> None:
        # Guards: _calls. Written by media handlers as streams open and close; read by /healthz.
        self._lock = threading.Lock()
        self._calls: dict[str, LiveCall] = {}

    def add(self, call_sid: str, session: LiveCall) -> None:
        with self._lock:
            self._calls[call_sid] = session

    def remove(self, call_sid: str) -> None:
        with self._lock:
            self._calls.pop(call_sid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)
