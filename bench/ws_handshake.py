"""The websocket upgrade (RFC 6455 section 4) for the benchmark's lean fakes, both sides.

Only the HTTP handshake: once a socket is open, frames are built and read by the server's
own codec, `services.ws_frames`.
"""
from __future__ import annotations

import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    pass


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


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
