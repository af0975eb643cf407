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


def _text_frame(text: str) -> bytes:
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class TwilioSocket:
    def __init__(self, ws):
        self._ws = ws
        # Guards: frame encoding (wsproto state) and socket writes. Any greenlet may send.
        self._send_lock = threading.Lock()
        ws.sock = _SendAllSocket(ws.sock, threading.Lock())
        # Server frames are not masked: without an extension (Twilio asks for none) a frame is
        # a two-to-four byte header and the text, cheaper to build here than through wsproto.
        accepted = getattr(getattr(ws.ws.connection, "_proto", None), "extensions", None)
        self._plain_frames = accepted == []

    def send(self, *texts: str) -> None:
        """Send text messages in one write."""
        with self._send_lock:
            if not self._ws.connected:
                raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
            if self._plain_frames:
                data = b"".join(map(_text_frame, texts))
            else:
                data = b"".join(self._ws.ws.send(TextMessage(data=text)) for text in texts)
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
