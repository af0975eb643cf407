"""Twilio Media Streams (bidirectional) wire format: frames in, commands out.

Pure: no sockets, no clocks. `parse_frame` turns one websocket message into a typed
event or raises `FrameError` with a reason that names the kind of damage (used as the
drop reason in the call's figures). The builders return JSON text for Twilio.
"""
from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Mapping

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_MS = 20
MULAW_SILENCE = 0xFF
# A Twilio media payload is 160 bytes; allow generous slack but refuse junk floods.
MAX_PAYLOAD_B64 = 8192
DTMF_DIGITS = frozenset("0123456789*#ABCD")
SID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class FrameError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(frozen=True, slots=True)
class Media:
    payload: str  # base64 μ-law, checked to decode
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop


def parse_frame(message: str | bytes | None) -> TwilioEvent:
    if not isinstance(message, str):
        raise FrameError("binary", f"{len(message or b'')} bytes")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise FrameError("not_json") from None
    if type(frame) is not dict:
        raise FrameError("not_object")
    event = frame.get("event")
    try:
        if event == "media":
            return _media(frame["media"])
        if event == "mark":
            return Mark(name=_text(_object(frame, "mark"), "name"))
        if event == "start":
            return _start(frame)
        if event == "dtmf":
            digit = _text(_object(frame, "dtmf"), "digit")
            if digit not in DTMF_DIGITS:
                raise TypeError("dtmf.digit")
            return Dtmf(digit=digit)
        if event == "stop":
            return Stop()
        if event == "connected":
            return Connected()
    except (KeyError, TypeError) as exc:
        raise FrameError("malformed", f"{event} without {exc}") from None
    raise FrameError("unknown_event", str(event)[:40] if type(event) is str else type(event).__name__)


def _object(parent: Mapping, key: str) -> dict:
    value = parent[key]
    if type(value) is not dict:
        raise TypeError(key)
    return value


def _text(parent: Mapping, key: str, limit: int = 256) -> str:
    value = parent[key]
    if type(value) is not str or not value or len(value) > limit:
        raise TypeError(key)
    return value


def _media(media) -> Media:
    # The hot path (50 frames a second per call): no helpers. Anything but a JSON object
    # raises TypeError at `media["payload"]`, so the object needs no check of its own.
    payload = media["payload"]
    if type(payload) is not str or not payload or len(payload) > MAX_PAYLOAD_B64:
        raise FrameError("bad_payload", "empty, oversized or not a string")
    try:
        binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        raise FrameError("bad_base64") from None
    track = media.get("track") or "inbound"
    if type(track) is not str:
        raise TypeError("media.track")
    return Media(payload=payload, track=track)


def _start(frame: Mapping) -> Start:
    start = _object(frame, "start")
    stream_sid = frame.get("streamSid") or start["streamSid"]
    # The stream SID is pasted into hand-built JSON (media_message): no quote or backslash may pass.
    if type(stream_sid) is not str or not SID.fullmatch(stream_sid):
        raise TypeError("streamSid")
    params = start.get("customParameters") or {}
    if type(params) is not dict or not all(type(v) is str for v in params.values()):
        raise TypeError("customParameters")
    fmt = start.get("mediaFormat") or {}
    if type(fmt) is not dict:
        raise TypeError("mediaFormat")
    encoding = fmt.get("encoding") or "audio/x-mulaw"
    sample_rate = fmt.get("sampleRate") or 8000
    if type(encoding) is not str or type(sample_rate) is not int:
        raise TypeError("mediaFormat")
    return Start(stream_sid=stream_sid, call_sid=_text(start, "callSid"), parameters=dict(params),
                 encoding=encoding, sample_rate=sample_rate)


# --- commands to Twilio ---------------------------------------------------------------

def media_message(stream_sid: str, frame: bytes) -> str:
    """One 20 ms frame. Built by hand: it runs 50 times a second per call."""
    return ('{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
            + binascii.b2a_base64(frame, newline=False).decode("ascii") + '"}}')


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})
