"""The Twilio media websocket, safe to write from several greenlets.

simple-websocket's `send` takes no lock and writes with `socket.send`, which may write
part of a frame under gevent. TX sends media while barge-in sends `clear`, and the
library's reader greenlet answers pings: every write goes through one lock and `sendall`.
"""
from __future__ import annotations

import threading

from simple_websocket import ConnectionClosed
from wsproto.events import TextMessage


class _SendAllSocket:
    """Stands in for the connection's socket: whole writes, one at a time."""

    def __init__(self, sock, lock: threading.Lock):
        self._sock = sock
        self._lock = lock

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class TwilioSocket:
    def __init__(self, ws):
        self._ws = ws
        # Guards: frame encoding (wsproto state) and socket writes. Any greenlet may send.
        self._send_lock = threading.Lock()
        ws.sock = _SendAllSocket(ws.sock, threading.Lock())

    def send(self, text: str) -> None:
        with self._send_lock:
            if not self._ws.connected:
                raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
            data = self._ws.ws.send(TextMessage(data=text))
            self._ws.sock.send(data)

    def receive(self, timeout: float | None = None):
        return self._ws.receive(timeout)

    @property
    def connected(self) -> bool:
        return bool(self._ws.connected)

    def close(self, code: int = 1000, message: str | None = None) -> None:
        with self._send_lock:
            try:
                self._ws.close(reason=code, message=message)
            except (ConnectionClosed, OSError):
                pass
