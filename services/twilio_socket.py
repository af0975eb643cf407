"""The Twilio media websocket once Flask-Sock has accepted it.

simple-websocket does the handshake; then the call's RX greenlet reads frames straight
from the socket (`services.ws_frames`) instead of through the library's reader greenlet
(that costs a greenlet switch and wsproto's parser per 20 ms frame: the README's Benchmark
section has the figures), and every write (TX's media, barge-in's `clear`, a pong, the close) goes through one lock
and `sendall`: simple-websocket's own `send` takes no lock and may write part of a frame.
"""
from __future__ import annotations

import logging
import socket
import threading

from services import ws_frames
from services.fast_socket import recv_of, sendall_of
from services.ws_frames import FrameDecoder, FrameProtocolError

log = logging.getLogger("media")


class SocketClosed(Exception):
    """The Twilio socket is closed: by us, by Twilio (its close code), or lost (1006)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


# --- simple-websocket: the only place that touches its internals ---------------------


class _NoReaderThread:
    """simple-websocket's `thread_class`: the reader it would start is never run."""

    def __init__(self, target=None, **_kwargs):
        self.name = "media-rx"

    def start(self) -> None:
        pass


class SimpleWebsocketAdapter:
    """What this module uses of a `simple_websocket.Server` beyond its public methods.

    Written against simple-websocket==1.1.0 (pinned in requirements.txt); read it again
    before a bump. Three things:

    - the `thread_class` option (given through Flask-Sock's `SOCK_SERVER_OPTIONS`): the
      library builds its reader as `thread_class(target=...)`, renames it through `.name`
      and calls `.start()`; `_NoReaderThread` never runs it, so nothing reads the socket
      but us and the library's ping, pong and close handling never happens (we do those);
    - `ws.sock`, the accepted socket: the handshake is rebuilt from the WSGI environ and
      reads nothing from it, so no frame is left behind in the library's buffers;
    - `ws.connected`, set to False once we have closed: Flask-Sock calls `ws.close()`
      after the handler returns, which then raises ConnectionClosed (Flask-Sock ignores
      it) instead of building a second close frame and writing it after ours;
    - the library accepts permessage-deflate whenever the client offers it (a browser
      always does), and our frame reader speaks no extension: the offer is taken out of
      the environ the handshake is rebuilt from (`decline_extensions`).
    """

    # For `app.config["SOCK_SERVER_OPTIONS"]`. No `ping_interval`: the reader would send the pings.
    SERVER_OPTIONS = {"thread_class": _NoReaderThread}

    @staticmethod
    def decline_extensions(environ: dict) -> None:
        """Before the upgrade is accepted: no extension is offered, so none is agreed."""
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)

    @staticmethod
    def socket_of(ws) -> socket.socket:
        return ws.sock

    @staticmethod
    def mark_closed(ws) -> None:
        ws.connected = False


class TwilioSocket:
    """Read by the RX greenlet only; written by any greenlet under `_send_lock`."""

    def __init__(self, ws):
        self._ws = ws
        self._sock = SimpleWebsocketAdapter.socket_of(ws)
        self._sendall = sendall_of(self._sock)
        self._recv = recv_of(self._sock)
        self._sock.settimeout(None)  # a slow `sendall` waits as long as it takes; RX reads block
        # Guards: writes to the socket and `_closed`. Any greenlet may send or close.
        self._send_lock = threading.Lock()
        self._closed = False
        self._decoder = FrameDecoder()
        self.close_code: int | None = None

    def send(self, *texts: str) -> None:
        """Send text messages in one write."""
        data = b"".join(map(ws_frames.text_frame, texts))
        with self._send_lock:
            if self._closed:
                raise SocketClosed(self.close_code or 1000, "")
            self._sendall(data)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message; None after `timeout` seconds without one; SocketClosed at the end."""
        decoder = self._decoder
        while True:
            try:
                message = decoder.next()
            except FrameProtocolError as exc:
                log.warning("media socket protocol error", extra={"error": str(exc), "code": exc.code})
                self.close(exc.code, str(exc))
                raise SocketClosed(exc.code, str(exc)) from None
            if message is None:
                if self._closed:
                    raise SocketClosed(self.close_code or 1005, "")
                try:
                    if timeout is None:
                        data = self._recv(65536)
                    else:
                        self._sock.settimeout(timeout)
                        try:
                            data = self._sock.recv(65536)
                        finally:
                            self._sock.settimeout(None)
                except socket.timeout:
                    return None
                except OSError:
                    data = b""
                if not data:
                    self._mark_closed(1006)
                    raise SocketClosed(1006, "connection lost")
                decoder.feed(data)
                continue
            opcode, payload = message
            if opcode == ws_frames.OP_TEXT:
                try:
                    return payload.decode()
                except UnicodeDecodeError:
                    return payload  # the frame parser treats it as junk, like binary
            if opcode == ws_frames.OP_BINARY:
                return payload
            if opcode == ws_frames.OP_PING:
                self._write(ws_frames.encode(ws_frames.OP_PONG, payload))
            elif opcode == ws_frames.OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close(1000)
                with self._send_lock:
                    self.close_code = code  # Twilio's code, not ours
                raise SocketClosed(code, payload[2:].decode(errors="replace"))

    def close(self, code: int = 1000, message: str | None = None) -> None:
        """Send a close frame (once) and release the socket."""
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            self.close_code = code
            try:
                self._sock.sendall(ws_frames.close_frame(code, message or ""))
            except OSError:
                pass
        self._release()

    def _write(self, data: bytes) -> None:
        with self._send_lock:
            if not self._closed:
                try:
                    self._sock.sendall(data)
                except OSError:
                    pass

    def _mark_closed(self, code: int) -> None:
        with self._send_lock:
            self._closed = True
            self.close_code = self.close_code or code
        self._release()

    def _release(self) -> None:
        SimpleWebsocketAdapter.mark_closed(self._ws)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
