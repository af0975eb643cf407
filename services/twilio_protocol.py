"""Twilio Media Streams (bidirectional) wire format: frames in, commands out.

Pure: no sockets, no clocks. `parse_frame` turns one websocket message into a typed
event or raises `FrameError` with a reason that names the kind of damage (used as the
drop reason in the call's figures). The builders return JSON text for Twilio.
"""
from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Mapping

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_MS = 20
MULAW_SILENCE = 0xFF
# A Twilio media payload is 160 bytes; allow generous slack but refuse junk floods.
MAX_PAYLOAD_B64 = 8192


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
    except ValueError:
        raise FrameError("not_json") from None
    if not isinstance(frame, dict):
        raise FrameError("not_object")
    event = frame.get("event")
    try:
        if event == "media":
            return _media(frame["media"])
        if event == "mark":
            return Mark(name=str(frame["mark"]["name"]))
        if event == "start":
            return _start(frame)
        if event == "dtmf":
            return Dtmf(digit=str(frame["dtmf"]["digit"]))
        if event == "stop":
            return Stop()
        if event == "connected":
            return Connected()
    except (KeyError, TypeError) as exc:
        raise FrameError("malformed", f"{event} without {exc}") from None
    raise FrameError("unknown_event", str(event)[:40])


def _media(media: Mapping) -> Media:
    payload = media["payload"]
    if not isinstance(payload, str) or not payload or len(payload) > MAX_PAYLOAD_B64:
        raise FrameError("bad_payload", "empty, oversized or not a string")
    try:
        binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error:
        raise FrameError("bad_base64") from None
    return Media(payload=payload, track=media.get("track") or "inbound")


def _start(frame: Mapping) -> Start:
    start = frame["start"]
    params = start.get("customParameters") or {}
    fmt = start.get("mediaFormat") or {}
    return Start(
        stream_sid=str(frame.get("streamSid") or start["streamSid"]),
        call_sid=str(start["callSid"]),
        parameters={str(k): str(v) for k, v in params.items()},
        encoding=str(fmt.get("encoding") or "audio/x-mulaw"),
        sample_rate=int(fmt.get("sampleRate") or 8000),
    )


# --- commands to Twilio ---------------------------------------------------------------

def media_message(stream_sid: str, frame: bytes) -> str:
    """One 20 ms frame. Built by hand: it runs 50 times a second per call."""
    return ('{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
            + binascii.b2a_base64(frame, newline=False).decode("ascii") + '"}}')


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})
