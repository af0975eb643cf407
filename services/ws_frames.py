"""RFC 6455 frames without extensions, the project's one frame codec.

The handshakes stay with the libraries (Flask-Sock/simple-websocket for Twilio's socket,
websocket-client for the Realtime one); once a socket is open, the per-frame paths use
these: the call's RX greenlet reads Twilio's frames here directly, and caller audio goes
to the Realtime API as frames built here. simple-websocket's reader greenlet and wsproto's
parser cost a greenlet switch and a generator pipeline per 20 ms frame. The benchmark's
lean callers and fake Realtime API read and write their frames here too: no other module
parses a frame header. Pure: bytes in, frames out.
"""
from __future__ import annotations

import sys

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_BYTE_ORDER = sys.byteorder
# A peer fragmenting a message into one-byte frames would cost a bytes object per byte.
MAX_FRAGMENTS = 1024


class FrameProtocolError(ValueError):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


def unmask(key: bytes, payload: bytes) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation."""
    size = len(payload)
    if not size:
        return payload
    mask = key * (size // 4) + key[: size % 4]
    return (int.from_bytes(payload, _BYTE_ORDER) ^ int.from_bytes(mask, _BYTE_ORDER)).to_bytes(size, _BYTE_ORDER)


def _header(opcode: int, size: int, mask_bit: int) -> bytes:
    if size < 126:
        return bytes((0x80 | opcode, mask_bit | size))
    if size < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + size.to_bytes(2, "big")
    return bytes((0x80 | opcode, mask_bit | 127)) + size.to_bytes(8, "big")


def encode(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """A final frame: unmasked as a server sends it, or masked with `key` as a client does."""
    if key is None:
        return _header(opcode, len(payload), 0) + payload
    return _header(opcode, len(payload), 0x80) + key + unmask(key, payload)


def text_frame(text: str) -> bytes:
    return encode(OP_TEXT, text.encode())


def masked_text_frame(text: str | bytes, key: bytes) -> bytes:
    """A client frame (we are the client of the Realtime API), masked with `key`; `text` may
    come already encoded (UTF-8)."""
    return encode(OP_TEXT, text if type(text) is bytes else text.encode(), key)


def close_frame(code: int, reason: str = "", key: bytes | None = None) -> bytes:
    """A close frame; masked with `key` when a client sends it. The reason is cut to fit 125 bytes,
    at a character's edge: a reason that is not valid UTF-8 fails the peer's connection."""
    cut = reason.encode()[:120].decode(errors="ignore").encode()
    return encode(OP_CLOSE, code.to_bytes(2, "big") + cut, key)


class FrameDecoder:
    """Feed bytes, take whole messages.

    A server reads a client's frames, which must be masked (RFC 6455 5.1): the default. With
    `masked=False` it reads as a client, a server's frames, which must not be (the benchmark's
    callers read the server's this way).
    """

    def __init__(self, max_message: int = 1 << 20, masked: bool = True):
        self._mask_bit = 0x80 if masked else 0
        self._buffer = bytearray()
        self._max = max_message
        self._parts: list[bytes] = []
        self._parts_size = 0  # kept as it grows: summing the parts per fragment is quadratic
        self._message_opcode = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next whole message or control frame; None when more bytes are needed.

        Data messages come back as OP_TEXT or OP_BINARY with their fragments joined.
        """
        while True:
            frame = self._frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise FrameProtocolError(1002, f"unknown opcode {opcode}")
                if not fin or len(payload) > 125:
                    raise FrameProtocolError(1002, "fragmented or oversized control frame")
                return opcode, payload
            if opcode == OP_CONT:
                if not self._parts:
                    raise FrameProtocolError(1002, "continuation without a message")
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._parts:
                    raise FrameProtocolError(1002, "new message inside a fragmented one")
                self._message_opcode = opcode
            else:
                raise FrameProtocolError(1002, f"unknown opcode {opcode}")
            if fin and not self._parts:
                return opcode, payload
            self._parts.append(payload)
            self._parts_size += len(payload)
            if self._parts_size > self._max or len(self._parts) > MAX_FRAGMENTS:
                raise FrameProtocolError(1009, "message too big or in too many fragments")
            if fin:
                whole = b"".join(self._parts)
                self._parts.clear()
                self._parts_size = 0
                return self._message_opcode, whole

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        b0, b1 = buffer[0], buffer[1]
        if b0 & 0x70:
            raise FrameProtocolError(1002, "reserved bits set without an extension")
        if b1 & 0x80 != self._mask_bit:
            raise FrameProtocolError(1002, "client frame not masked" if self._mask_bit else "server frame masked")
        size = b1 & 0x7F
        start = 2
        if size == 126:
            if len(buffer) < 4:
                return None
            size, start = int.from_bytes(buffer[2:4], "big"), 4
        elif size == 127:
            if len(buffer) < 10:
                return None
            size, start = int.from_bytes(buffer[2:10], "big"), 10
        if size > self._max:
            raise FrameProtocolError(1009, "message too big")
        key_size = 4 if self._mask_bit else 0
        end = start + key_size + size
        if len(buffer) < end:
            return None
        payload = bytes(buffer[start + key_size:end])
        if key_size:
            payload = unmask(bytes(buffer[start:start + 4]), payload)
        del buffer[:end]
        return bool(b0 & 0x80), b0 & 0x0F, payload
