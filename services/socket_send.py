"""`sendall` for the per-frame writes, without gevent's wrapping when the kernel takes it all.

gevent's `sendall` builds a memoryview, a timeout and a chunk loop around each write; a 20 ms
audio frame is a few hundred bytes that the kernel almost always takes at once. On a plain
gevent TCP socket the write is tried on the underlying non-blocking socket first, and only what
it leaves (a full send buffer) goes through gevent's `sendall`, which waits and keeps the
socket's timeout. A TLS socket (wss://) must go through its own `sendall`: its bytes are
encrypted there.
"""
from __future__ import annotations

from typing import Callable

from gevent import socket as gevent_socket


def sendall_of(sock) -> Callable[[bytes], None]:
    """A `sendall(data)` for `sock`: the fast one for a plain gevent socket, else its own."""
    raw = getattr(sock, "_sock", None)  # gevent's non-blocking socket under the cooperative one
    if type(sock) is not gevent_socket.socket or raw is None:
        return sock.sendall
    raw_send, slow = raw.send, sock.sendall

    def sendall(data: bytes) -> None:
        try:
            sent = raw_send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            slow(memoryview(data)[sent:])

    return sendall
