"""Twilio's webhooks at the paths the original deployment used."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, request

from server import twiml
from server.call_records import (
    APOLOGY_END_REASONS,
    KNOWN_STATUSES,
    apply_status,
    business_for_number,
    open_call,
)
from server.db import request_session
from server.models import Call
from server.security import StreamToken, signed_url, twilio_signature_valid

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("webhooks")

MEDIA_PATH = "/ws/twilio-media"


def _settings():
    return current_app.config["SETTINGS"]


@bp.before_request
def _check_twilio_signature() -> None:
    settings = _settings()
    if not settings.twilio_auth_token:
        return
    url = signed_url(settings.public_base_url, request.url, request.full_path)
    if not twilio_signature_valid(settings.twilio_auth_token, url, request.form.to_dict(),
                                  request.headers.get("X-Twilio-Signature")):
        log.warning("rejected webhook: bad or missing X-Twilio-Signature", extra={"path": request.path, "url": url})
        abort(403, "invalid Twilio signature")


def _xml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def _base_url() -> str:
    return _settings().public_base_url or request.host_url.rstrip("/")


def _stream_twiml(call_sid: str, business_id: int, direction: str, from_number: str, to_number: str) -> str:
    settings = _settings()
    base = _base_url()
    host = urlsplit(base).netloc
    token = StreamToken(settings.secret_key).issue(call_sid, settings.timing.stream_token_ttl_s)
    return twiml.connect_stream(
        action_url=f"{base}/webhook/stream_ended",
        stream_url=f"wss://{host}{MEDIA_PATH}",
        status_url=f"{base}/webhook/stream_status",
        parameters={
            "call_sid": call_sid,
            "business_id": str(business_id),
            "direction": direction,
            "from": from_number,
            "to": to_number,
            "token": token,
        },
    )


def _form(name: str) -> str:
    return (request.form.get(name) or "").strip()


@bp.post("/webhook/incoming_call")
@bp.post("/webhook/voice")
@bp.post("/webhook/incoming-call")
@bp.post("/incoming_call")
def incoming_call() -> Response:
    call_sid, from_number, to_number = _form("CallSid"), _form("From"), _form("To")
    if not call_sid:
        abort(400, "CallSid is required")
    session = request_session()
    business = business_for_number(session, to_number)
    if business is None:
        log.warning("call to a number of no business", extra={"call_sid": call_sid, "to": to_number})
        open_call(session, call_sid=call_sid, business=None, direction="inbound", from_number=from_number,
                  to_number=to_number, status="completed", end_reason="unknown_number")
        session.commit()
        return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNKNOWN_NUMBER))
    open_call(session, call_sid=call_sid, business=business, direction="inbound", from_number=from_number,
              to_number=to_number, status=_form("CallStatus") or "ringing")
    session.commit()
    log.info("inbound call", extra={"call_sid": call_sid, "business_id": business.id})
    return _xml(_stream_twiml(call_sid, business.id, "inbound", from_number, to_number))


@bp.post("/webhook/outbound_call")
def outbound_call() -> Response:
    """TwiML for a call the server placed: the business's number is `From`, the lead is `To`."""
    call_sid, from_number, to_number = _form("CallSid"), _form("From"), _form("To")
    if not call_sid:
        abort(400, "CallSid is required")
    session = request_session()
    business = business_for_number(session, from_number)
    if business is None:
        log.warning("outbound call from a number of no business", extra={"call_sid": call_sid, "from": from_number})
        return _xml(twiml.hangup())
    open_call(session, call_sid=call_sid, business=business, direction="outbound", from_number=from_number,
              to_number=to_number, status=_form("CallStatus") or "in-progress")
    session.commit()
    log.info("outbound call answered", extra={"call_sid": call_sid, "business_id": business.id})
    return _xml(_stream_twiml(call_sid, business.id, "outbound", from_number, to_number))


@bp.post("/webhook/stream_ended")
def stream_ended() -> Response:
    call_sid = _form("CallSid")
    call = request_session().query(Call).filter_by(call_sid=call_sid).one_or_none() if call_sid else None
    reason = call.end_reason if call else None
    log.info("stream ended", extra={"call_sid": call_sid or "-", "end_reason": reason})
    if reason in APOLOGY_END_REASONS:
        return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNAVAILABLE))
    return _xml(twiml.hangup())


@bp.post("/webhook/call_status")
def call_status() -> Response:
    call_sid, status = _form("CallSid"), _form("CallStatus").lower()
    if not call_sid or status not in KNOWN_STATUSES:
        abort(400, "CallSid and a known CallStatus are required")
    duration = _form("CallDuration")
    session = request_session()
    call = apply_status(session, call_sid, status, float(duration) if duration.isdigit() else None)
    session.commit()
    if call is None:
        log.warning("status for an unknown call", extra={"call_sid": call_sid, "status": status})
    else:
        log.info("call status", extra={"call_sid": call_sid, "status": status})
    return _xml(twiml.empty())


@bp.post("/webhook/stream_status")
def stream_status() -> Response:
    log.info("stream status", extra={"call_sid": _form("CallSid") or "-", "stream_sid": _form("StreamSid"),
                                     "event": _form("StreamEvent"), "error": _form("StreamError")})
    return _xml(twiml.empty())
