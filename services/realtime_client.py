"""The call's connection to the OpenAI Realtime API (websocket-client, cooperative under gevent)."""
from __future__ import annotations

import select
import socket
import ssl
from typing import Callable
from random import randbytes
from time import monotonic
from urllib.parse import urlsplit

import gevent
import websocket
from gevent.event import Event

from services import realtime_protocol, ws_frames
from services.realtime_addresses import ADDRESSES, connect_tcp
from services.realtime_protocol import ServerEvent
from services.fast_socket import sendall_of


class RealtimeUnavailable(Exception):
    """The Realtime API could not be reached or refused the connection."""


class RealtimeClosed(Exception):
    """The Realtime socket closed or dropped."""


# The socket's timeout, set once: a write the peer does not take within it (a network black hole)
# loses the connection instead of holding `ws.lock` until TCP gives up; a read that waits this long
# just waits on (the call's watch judges silence).
WRITE_TIMEOUT_S = 5.0
# The socket's send buffer, about two seconds of the caller's audio: a backlog beyond it is stale,
# and a peer that stops reading fills it within seconds (an autotuned one grows to megabytes).
SEND_BUFFER_BYTES = 32 * 1024
# How long a ping or a close waits for a write in progress before going on without the lock.
_LOCK_WAIT_S = 1.0


class _Idle(Exception):
    """No frame within the socket's timeout: the reader waits on."""


class _WebSocket(websocket.WebSocket):
    """websocket-client's socket, telling a read that waited the socket's timeout (`_Idle`: its
    frame buffer keeps what was read so far) apart from a write of its own (a pong, a close
    reply) that timed out, which loses the connection like any other failure."""

    def recv_frame(self):
        try:
            return super().recv_frame()
        except websocket.WebSocketTimeoutException:
            raise _Idle from None


class RealtimeConnection:
    """Only the call's Realtime greenlet calls `connect` and `receive`, and it keeps calling
    `receive` so that pings are answered. Any greenlet may `send` or `close`.

    `_ws` and `_sock` are written once, by `connect`, before anything is sent; `close` never
    clears them, so the reader sees a closed socket, not a missing one. Every write (ours, and
    websocket-client's own pongs and closes) is made under websocket-client's `ws.lock`, and none
    holds it past `WRITE_TIMEOUT_S`: a write that times out shuts the socket (the session is lost).
    `close` shuts the socket even when it cannot get the lock.

    The connection may be opened ahead (`open_early`, by the media route while it waits for the
    stream's `start`): `connect` then waits for that attempt instead of making its own.
    """

    def __init__(self, url: str, api_key: str, timeout_s: float):
        self.url = url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._ws: websocket.WebSocket | None = None
        self._sock: socket.socket | None = None
        self._sendall: Callable[[bytes], None] | None = None  # `_sock`'s (services/fast_socket.py)
        self._closed = Event()  # set once, by close(), from any greenlet
        self._opening: gevent.Greenlet | None = None  # an early attempt, until `connect` takes it
        # Events read while the connection waited in the pool (`read_waiting`), for `receive`.
        self._pending: list[bytes] = []  # rarely more than one: a list, not a deque's 0.75 KB
        # Written by `receive` (the Realtime greenlet); the call's liveness watch reads them.
        self.received_at = 0.0  # monotonic time the last event was read, before it was parsed
        self.heard_at = monotonic()  # the last frame of any kind (a pong too), or the connect

    def open_early(self) -> None:
        """Start connecting on a greenlet of its own; `connect` takes the outcome. `close`
        meanwhile shuts the socket as soon as the attempt ends."""
        self._opening = gevent.spawn(self._open_early)

    def connect(self) -> None:
        if self._ws is not None:
            return  # opened ahead, in the pool
        opening, self._opening = self._opening, None
        if opening is None:
            self._open()
            return
        failure = opening.get()
        if failure is not None:
            raise failure

    def _open_early(self) -> RealtimeUnavailable | RealtimeClosed | None:
        try:
            self._open()
        except (RealtimeUnavailable, RealtimeClosed) as exc:
            return exc  # for `connect` to raise: a greenlet that dies of it would print a traceback
        return None

    def _open(self) -> None:
        ws = _WebSocket(enable_multithread=True, skip_utf8_validation=True)
        try:
            ws.connect(self.url, header=[f"Authorization: Bearer {self._api_key}"], timeout=self._timeout_s,
                       socket=_tcp_to(self.url, self._timeout_s))
        except (websocket.WebSocketException, OSError) as exc:
            raise RealtimeUnavailable(f"{type(exc).__name__}: {exc}") from None
        ws.settimeout(WRITE_TIMEOUT_S)
        try:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass  # the kernel's own size: a black hole then takes longer to show
        self._ws, self._sock, self._sendall = ws, ws.sock, sendall_of(ws.sock)
        self.heard_at = monotonic()
        if self._closed.is_set():  # the call ended while we were connecting
            self._shut()
            raise RealtimeClosed("closed while connecting")

    def send(self, text: str | bytes) -> None:
        """Send one text message (a str, or its UTF-8). Frames are built here (50 a second per call: websocket-client's
        generic framing costs several times more) and written under websocket-client's own
        send lock, so they never interleave with a frame it writes (a close, a pong). Mask keys
        come from `random`: masking protects proxies from browser scripts, not a TLS link
        between two servers."""
        ws = self._ws
        if ws is None:
            raise RealtimeClosed("send before connect")
        frame = ws_frames.masked_text_frame(text, randbytes(4))
        with ws.lock:
            if self._closed.is_set():
                raise RealtimeClosed("send after close")
            try:
                self._sendall(frame)
            except OSError as exc:
                self._lose()  # a part of the frame may be out: nothing more can follow it
                raise RealtimeClosed(f"send failed: {exc}") from None

    def receive(self) -> ServerEvent:
        """The next event; raises RealtimeClosed when the socket is gone, ProtocolError on junk.

        Control frames are read here too (websocket-client answers pings itself), so that a
        pong counts as a sign of life."""
        ws = self._ws
        if self._pending:
            self.received_at = monotonic()
            return realtime_protocol.parse_server_event(self._pending.pop(0))
        while True:
            try:
                opcode, frame = ws.recv_data_frame(True)
            except _Idle:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                raise RealtimeClosed(f"{type(exc).__name__}: {exc}") from None
            self.heard_at = now = monotonic()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.received_at = now
                return realtime_protocol.parse_server_event(frame.data)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise RealtimeClosed("closed by the server")
            if opcode == websocket.ABNF.OPCODE_BINARY:
                raise realtime_protocol.ProtocolError("binary frame from the Realtime API")

    def read_waiting(self) -> bool:
        """For a connection waiting in the pool, with no reader: read what the service sent
        meanwhile (its events kept for `receive`; pings answered by websocket-client). False when
        the service closed it or the network dropped it. Only the pool calls this, before a call
        takes the connection."""
        ws, sock = self._ws, self._sock
        if ws is None or self._closed.is_set():
            return False
        try:
            while (isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select([sock], [], [], 0)[0]:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._pending.append(frame.data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    return False
                self.heard_at = monotonic()
        except (_Idle, websocket.WebSocketException, OSError):
            return False
        return True

    def ping(self) -> None:
        """Ask the server for a sign of life; its pong updates `heard_at`. Not while a write is
        stuck (the lock held past `_LOCK_WAIT_S`): the pong's deadline judges that."""
        ws = self._ws
        if ws is None:
            return
        frame = ws_frames.encode(ws_frames.OP_PING, b"", randbytes(4))
        if not ws.lock.acquire(timeout=_LOCK_WAIT_S):
            return
        try:
            if not self._closed.is_set():
                self._sock.sendall(frame)
        except OSError:
            self._lose()  # the reader sees the failure
        finally:
            ws.lock.release()

    def close(self) -> None:
        """Say goodbye (a close frame, if the socket takes it within a second) and shut the
        socket, which ends the reader's `receive`. Once; from any greenlet."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._ws is not None:
            self._shut()

    def _shut(self) -> None:
        """The close frame when the lock comes within `_LOCK_WAIT_S` (a write stuck on a peer that
        stopped reading must not hold the call's end), then the socket, with or without it."""
        frame = ws_frames.encode(ws_frames.OP_CLOSE, (1000).to_bytes(2, "big"), randbytes(4))
        lock = self._ws.lock
        if lock.acquire(timeout=_LOCK_WAIT_S):
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(frame)
            except OSError:
                pass
            finally:
                lock.release()
        self._lose()
        try:
            self._sock.close()
        except OSError:
            pass

    def _lose(self) -> None:
        """Shut the socket both ways, which ends the reader's `receive` (RealtimeClosed): the
        session is lost, and the call's Realtime greenlet opens a new one or ends the call."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _tcp_to(url: str, timeout_s: float) -> socket.socket:
    """The socket websocket-client's handshake runs on, to an address of the URL's host from the
    process's cache (`ADDRESSES`): a call's connect never queues behind another task's lookup.
    An address that fails is dropped, so the next connect looks the host up again."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host, port = parts.hostname or "", parts.port or (443 if secure else 80)
    try:
        sock = connect_tcp(ADDRESSES.address(host, port), timeout_s)
    except OSError:
        ADDRESSES.forget(host, port)
        raise
    if not secure:
        return sock
    try:
        return _tls().wrap_socket(sock, server_hostname=host)
    except OSError:
        sock.close()
        raise


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One context per process: loading the CA store costs milliseconds each time."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS
