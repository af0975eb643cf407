"""Just enough RFC 6455 for the benchmark's lean fakes: handshakes and frame parsing.

Frames are built and unmasked by the server's own `services.ws_frames`.
Text frames only (plus close, ping, pong); no extensions, no fragmentation on send.
A client masks every frame; the lean caller uses one fixed mask key, which lets it
build each call's media frame once (the server does not check the key's randomness).
"""
from __future__ import annotations

import base64
import hashlib
import os

from services import ws_frames
from services.ws_frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT  # noqa: F401

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FIXED_MASK = b"\x5a\x3c\xa5\xc3"


class HandshakeError(Exception):
    pass


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def unmask(data: bytes, key: bytes) -> bytes:
    return ws_frames.unmask(key, data)


mask = unmask


def client_frame(payload: bytes, opcode: int = OP_TEXT, key: bytes = FIXED_MASK) -> bytes:
    return ws_frames.encode(opcode, payload, key)


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    return ws_frames.encode(opcode, payload)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def client_handshake(sock, host: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    """Upgrade a connected socket; returns bytes read past the response (the first frames)."""
    key = base64.b64encode(os.urandom(16))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError(f"connection closed during the handshake: {data[:200]!r}")
        data += chunk
        if len(data) > 65536:
            raise HandshakeError("handshake response too long")
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *header_lines = head.decode("latin-1").split("\r\n")
    if status.split(" ")[1:2] != ["101"]:
        raise HandshakeError(f"upgrade refused: {status}")
    got = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if got.get("sec-websocket-accept", "").encode() != accept_key(key):
        raise HandshakeError("bad Sec-WebSocket-Accept")
    return rest


def read_request(sock) -> tuple[str, dict[str, str], bytes] | None:
    """Server side: the upgrade request's target and headers, and bytes read past it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    target = parts[1] if len(parts) >= 2 else ""
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return target, headers, rest


def server_accept(sock, headers: dict[str, str]) -> None:
    key = headers.get("sec-websocket-key", "").encode()
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")


def parse_frames(buf: bytes, pos: int = 0):
    """Yield (fin, opcode, payload, end) for each whole frame from `pos`, unmasking client frames.

    Used on the rare paths; the hot paths inline the same header arithmetic.
    """
    n = len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length, hl = b1 & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                return
            length, hl = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
        elif length == 127:
            if n - pos < 10:
                return
            length, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
        key = None
        if b1 & 0x80:
            if n - pos < hl + 4:
                return
            key = buf[pos + hl:pos + hl + 4]
            hl += 4
        end = pos + hl + length
        if end > n:
            return
        payload = buf[pos + hl:end]
        if key is not None:
            payload = unmask(payload, key)
        yield bool(b0 & 0x80), b0 & 0x0F, payload, end
        pos = end
