"""The call's connection to the OpenAI Realtime API (websocket-client, cooperative under gevent)."""
from __future__ import annotations

from random import randbytes
from time import monotonic

import websocket

from services import realtime_protocol, ws_frames
from services.realtime_protocol import ServerEvent


class RealtimeUnavailable(Exception):
    """The Realtime API could not be reached or refused the connection."""


class RealtimeClosed(Exception):
    """The Realtime socket closed or dropped."""


class RealtimeConnection:
    """Any greenlet may `send` (websocket-client's own lock serialises writes); only the
    call's Realtime greenlet calls `receive`, and keeps calling it so pings are answered."""

    def __init__(self, url: str, api_key: str, timeout_s: float):
        self._url = url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._ws: websocket.WebSocket | None = None
        self.received_at = 0.0  # monotonic time the last event was read, before it was parsed

    def connect(self) -> None:
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        try:
            ws.connect(self._url, header=[f"Authorization: Bearer {self._api_key}"], timeout=self._timeout_s)
        except (websocket.WebSocketException, OSError) as exc:
            raise RealtimeUnavailable(f"{type(exc).__name__}: {exc}") from None
        ws.settimeout(None)
        self._ws = ws

    def send(self, text: str) -> None:
        """Send one text message. Frames are built here (50 a second per call: websocket-client's
        generic framing costs several times more) and written under websocket-client's own
        send lock, so they never interleave with a frame it writes (a close, a pong). Mask keys
        come from `random`: masking protects proxies from browser scripts, not a TLS link
        between two servers."""
        ws = self._ws
        if ws is None or not ws.connected:
            raise RealtimeClosed("send after close")
        frame = ws_frames.masked_text_frame(text, randbytes(4))
        try:
            with ws.lock:
                ws.sock.sendall(frame)
        except (OSError, AttributeError) as exc:
            raise RealtimeClosed(f"send failed: {exc}") from None

    def receive(self) -> ServerEvent:
        """The next event; raises RealtimeClosed when the socket is gone, ProtocolError on junk."""
        try:
            text = self._ws.recv()
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            raise RealtimeClosed(f"{type(exc).__name__}: {exc}") from None
        if not text:
            raise RealtimeClosed("closed by the server")
        self.received_at = monotonic()
        return realtime_protocol.parse_server_event(text)

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except (websocket.WebSocketException, OSError):
                pass
