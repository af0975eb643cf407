"""What a simulated Twilio call is made of, for the benchmark's lean caller and the tests' fake.

The webhook request Twilio posts and the TwiML read back (`place_call`), and the caller's
two 20 ms μ-law frames (silence, a steady tone that any VAD takes for speech).
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Mapping

import requests

TEST_ACCOUNT_SID = "AC" + "0" * 30 + "01"
FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
SILENCE_FRAME = b"\xff" * FRAME_BYTES
# A 500 Hz square wave (8 samples each side of zero): steady, clearly not silence to any VAD.
SPEECH_FRAME = (b"\x28" * 8 + b"\xa8" * 8) * (FRAME_BYTES // 16)


# A caller may tag its first frames with its number, in silence: bits as the two μ-law zeros
# (0x7f for 1, 0xff for 0), then a run of eight 0x7f. Any VAD hears silence; a fake that reads
# the audio can tell which call a Realtime connection carries, whatever the server in between.
_TAG_BITS = 32
_TAG_MARK = b"\x7f" * 8


def caller_tag_frame(tag: int) -> bytes:
    bits = bytes(0x7F if tag >> i & 1 else 0xFF for i in range(_TAG_BITS))
    return (bits + _TAG_MARK).ljust(FRAME_BYTES, b"\xff")


def read_caller_tag(audio: bytes) -> int | None:
    if audio[_TAG_BITS:_TAG_BITS + len(_TAG_MARK)] != _TAG_MARK:
        return None
    return sum(1 << i for i in range(_TAG_BITS) if audio[i] == 0x7F)


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# --- the webhook -----------------------------------------------------------------------


def twilio_form(call_sid: str, from_: str, to: str, account_sid: str = TEST_ACCOUNT_SID,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The form fields Twilio posts for an inbound call (what a signature is computed over)."""
    form = {"CallSid": call_sid, "AccountSid": account_sid, "From": from_, "To": to, "Direction": "inbound",
            "CallStatus": "ringing", "ApiVersion": "2010-04-01"}
    form.update(extra or {})
    return form


@dataclass(frozen=True)
class PlacedCall:
    """What the webhook answered. `stream_url` is None when the TwiML connects no stream."""

    status_code: int
    twiml: str
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    action_url: str | None = None
    status_callback: str | None = None
    says: tuple[str, ...] = ()
    hangup: bool = False


def parse_twiml(status_code: int, text: str) -> PlacedCall:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return PlacedCall(status_code=status_code, twiml=text)
    connect = root.find("Connect")
    stream = connect.find("Stream") if connect is not None else None
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")} if stream is not None else {}
    return PlacedCall(
        status_code=status_code, twiml=text,
        stream_url=stream.get("url") if stream is not None else None,
        parameters=params,
        action_url=connect.get("action") if connect is not None else None,
        status_callback=stream.get("statusCallback") if stream is not None else None,
        says=tuple((say.text or "") for say in root.iter("Say")),
        hangup=root.find("Hangup") is not None,
    )


def place_call(base_url: str, call_sid: str, from_: str, to: str, path: str = "/webhook/incoming_call",
               headers: Mapping[str, str] | None = None, extra_fields: Mapping[str, str] | None = None,
               account_sid: str = TEST_ACCOUNT_SID, timeout: float = 5.0) -> PlacedCall:
    """POST the webhook as Twilio does and read the TwiML it answers."""
    form = twilio_form(call_sid, from_, to, account_sid, extra_fields)
    response = requests.post(base_url.rstrip("/") + path, data=form, headers=dict(headers or {}), timeout=timeout)
    return parse_twiml(response.status_code, response.text)
