"""The business's webhook: one signed `call.completed` event per processed call.

What a business receives:

    POST <webhook_url>
    Content-Type: application/json; charset=utf-8
    X-Agent-Event: call.completed
    X-Agent-Event-Id: evt_…        the same on every retry of one event: deduplicate on it
    X-Agent-Timestamp: 1738310400  Unix seconds when this attempt was sent
    X-Agent-Signature: sha256=<hex of HMAC-SHA256(key=the business's webhook secret,
                                   message=timestamp + "." + the raw body)>

To verify: recompute the HMAC over the raw body bytes, compare in constant time, and
reject a timestamp more than 5 minutes away from now (a replay). Any 2xx answer is
success; anything else, or no answer within the timeout, is retried with backoff, and
every attempt is stored (webhook_deliveries): its status and timing, never the body
the receiver answered.

Where it goes: an https URL (plain http only with WEBHOOK_ALLOW_HTTP=on, for development)
whose host resolves to public addresses only, checked when the socket is opened
(public_http); redirects are not followed.

The body: {id, type, created_at, call{…}, turns[…], transcript_source, recording_transcript?,
summary, extraction{…}, lead{…}|null}.

A `test` event (X-Agent-Event: test), sent when the business asks for one from its settings or
the API, is signed, addressed and refused the same way: {id, type: "test", created_at,
business_id, message}. It is tried once, at once, and stored as a delivery without a call.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from services.post_call.public_http import AddressRefused, public_session
from services.store.models import Call, Lead, Turn, iso, utcnow

log = logging.getLogger("webhooks")

EVENT_TYPE = "call.completed"
TEST_EVENT_TYPE = "test"


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def build_test_event(business_id: int) -> dict[str, Any]:
    """What a business receives when it asks for a test event: nothing about any call."""
    return {"id": new_event_id(), "type": TEST_EVENT_TYPE, "created_at": iso(utcnow()), "business_id": business_id,
            "message": "A test event from the agent's server: no call took place."}


def build_event(call: Call, turns: Sequence[Turn], lead: Lead | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": new_event_id(),
        "type": EVENT_TYPE,
        "created_at": iso(utcnow()),
        "call": {
            "call_sid": call.call_sid,
            "business_id": call.business_id,
            "direction": call.direction,
            "is_test": call.is_test,  # from the console's Talk to your agent: no phone call
            "from": call.from_number,
            "to": call.to_number,
            "status": call.status,
            "started_at": iso(call.started_at),
            "answered_at": iso(call.answered_at),
            "ended_at": iso(call.ended_at),
            "duration_s": call.duration_s,
            "end_reason": call.end_reason,
            "recording_duration_s": call.recording_duration_s,
        },
        "turns": [{"speaker": t.speaker, "text": t.text, "started_at": iso(t.started_at),
                   "interrupted": t.interrupted} for t in turns],
        "transcript_source": "recording" if call.recording_transcript else "live",
        "summary": call.summary,
        "extraction": call.extraction,
        "lead": None if lead is None else {
            "id": lead.id, "phone": lead.phone, "name": lead.name, "city": lead.city,
            "created_at": iso(lead.created_at), "last_call_at": iso(lead.last_call_at),
        },
    }
    if call.recording_transcript:
        event["recording_transcript"] = call.recording_transcript
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


@lru_cache(maxsize=None)
def session(allow_private: bool, allow_http: bool) -> requests.Session:
    """One pooled session per process for each policy; the check runs on every new socket.
    `allow_http` is applied by `post`; it is a key here so that it is logged once when on."""
    if allow_http:
        log.warning("webhooks may go to plain http:// URLs (WEBHOOK_ALLOW_HTTP=on): development only")
    if allow_private:
        log.warning("webhooks may go to loopback and private addresses (WEBHOOK_ALLOW_PRIVATE=on): tests only")
    return public_session(allow_private)


def refusal(url: str, allow_http: bool) -> str | None:
    """Why `url` is not a webhook address this server sends to, before any connection."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "refused: not a URL"
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        return "refused: the webhook URL must be https://" + ("" if allow_http else " (WEBHOOK_ALLOW_HTTP is off)")
    return None


def post(http: requests.Session, url: str, secret: str, event: dict[str, Any], timeout_s: float,
         *, allow_http: bool = False) -> Attempt:
    refused = refusal(url, allow_http)
    if refused:
        return Attempt(False, None, refused, 0.0)
    body = encode(event)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "hebrew-agent-webhooks/1",
        "X-Agent-Event": event["type"],
        "X-Agent-Event-Id": event["id"],
        "X-Agent-Timestamp": str(timestamp),
        "X-Agent-Signature": sign(secret, timestamp, body),
    }
    started = time.monotonic()
    try:
        # No redirects: a redirect would carry the signed event to a host the business did not name.
        # stream=True: the status line is all that is wanted; the body is never downloaded.
        response = http.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False,
                             stream=True)
    except (requests.RequestException, AddressRefused) as exc:
        return Attempt(False, None, _reason(exc), _ms_since(started))
    response.close()  # the body is the receiver's and may echo the caller's words: not kept
    ok = 200 <= response.status_code < 300
    error = None if ok else f"HTTP {response.status_code}"
    return Attempt(ok, response.status_code, error, _ms_since(started))


def _reason(exc: BaseException) -> str:
    """The refusal itself when the address check said no, else the transport's error."""
    seen: BaseException | None = exc
    for _ in range(8):  # requests' error -> urllib3's MaxRetryError -> the connection's error -> ours
        if isinstance(seen, AddressRefused):
            return f"refused: {seen}"[:500]
        inner = getattr(seen, "reason", None) or seen.__cause__
        if inner is None:
            inner = next((arg for arg in seen.args if isinstance(arg, BaseException)), None)
        if not isinstance(inner, BaseException):
            break
        seen = inner
    return f"{type(exc).__name__}: {exc}"[:500]


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
